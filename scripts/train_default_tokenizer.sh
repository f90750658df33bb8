#!/usr/bin/env bash
# Reproduce the default image tokenizer (mmtok/assets/default_image_tokenizer): fetch the training photos, then
#   phase 1: scripts/default_tokenizer.json, 64x64 crops of the Debian photos (train_phase1.txt), from scratch,
#            one CPU thread;
#   phase 2: scripts/default_tokenizer_finetune.json, 256x256 crops of all training photos (train.txt), starting
#            from phase 1's exported fp16 weights (--init; the previously shipped tokenizer): GroupNorm
#            statistics then match those of 256x256 images. The shipped model ran it in four parts on a 2-core
#            CPU (each --init: fresh optimiser and schedule): 500 steps in one process of one thread (2 crops a
#            step), then under torchrun with 2 processes of one thread each (4 crops a step) 400 steps of a
#            1500-step schedule, then a 1900-step schedule to the end (held-out 23.94 dB), then from that
#            export an 800-step schedule at lr 1e-4 (held-out 24.08 dB);
# export in fp16 and measure on the held-out photos.
#   scripts/train_default_tokenizer.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/vqgan_data}
RUN=${2:-runs/default_tokenizer}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
test -f "$DATA/train.txt" -a -f "$DATA/train_phase1.txt" || scripts/fetch_training_photos.sh "$DATA"
"$PY" -m mmtok train-vqgan "$DATA/train_phase1.txt" --config scripts/default_tokenizer.json \
  --out-dir "$RUN/phase1" --export "$RUN/phase1/final" --export-fp16
"$PY" -m mmtok train-vqgan "$DATA/train.txt" --config scripts/default_tokenizer_finetune.json \
  --out-dir "$RUN/phase2" --init "$RUN/phase1/final" --stop-at 500
TORCHRUN=("$(dirname "$PY")/torchrun" --standalone --nproc_per_node 2 -m mmtok train-vqgan "$DATA/train.txt"
          --config scripts/default_tokenizer_finetune.json)
"${TORCHRUN[@]}" --out-dir "$RUN/phase2b" --steps 1500 --stop-at 400 --init "$RUN/phase2/checkpoints/step_0000500.pt"
"${TORCHRUN[@]}" --out-dir "$RUN/phase2c" --steps 1900 --init "$RUN/phase2b/checkpoints/step_0000400.pt" \
  --export "$RUN/phase2c/final" --export-fp16
"${TORCHRUN[@]}" --out-dir "$RUN/phase2d" --steps 800 --lr 0.0001 --init "$RUN/phase2c/final" \
  --export "$RUN/final" --export-fp16
"$PY" benchmarks/reconstruction.py --model "$RUN/final" --heldout "$DATA/heldout.txt"
