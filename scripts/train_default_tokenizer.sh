#!/usr/bin/env bash
# Reproduce the default image tokenizer (mmtok/assets/default_image_tokenizer): fetch the training photos, then
#   phase 1: scripts/default_tokenizer.json, 64x64 crops of the Debian photos (train_phase1.txt), from scratch;
#   phase 2: scripts/default_tokenizer_finetune.json, 256x256 crops of all training photos (train.txt), starting
#            from phase 1's weights (--init): GroupNorm statistics then match those of 256x256 images;
# both on one CPU thread; export in fp16 and measure on the held-out photos.
#   scripts/train_default_tokenizer.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/vqgan_data}
RUN=${2:-runs/default_tokenizer}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
test -f "$DATA/train.txt" -a -f "$DATA/train_phase1.txt" || scripts/fetch_training_photos.sh "$DATA"
"$PY" -m mmtok train-vqgan "$DATA/train_phase1.txt" --config scripts/default_tokenizer.json \
  --out-dir "$RUN/phase1" --export "$RUN/phase1/final"
"$PY" -m mmtok train-vqgan "$DATA/train.txt" --config scripts/default_tokenizer_finetune.json \
  --out-dir "$RUN/phase2" --init "$RUN/phase1/checkpoints" --export "$RUN/final" --export-fp16
"$PY" benchmarks/reconstruction.py --model "$RUN/final" --heldout "$DATA/heldout.txt"
