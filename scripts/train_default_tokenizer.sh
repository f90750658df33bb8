#!/usr/bin/env bash
# Reproduce the default image tokenizer (mmtok/assets/default_image_tokenizer): fetch the training photos,
# train on one CPU thread with scripts/default_tokenizer.json, export in fp16 and measure it.
#   scripts/train_default_tokenizer.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/vqgan_data}
RUN=${2:-runs/default_tokenizer}
PY=${PY:-.venv/bin/python}
test -f "$DATA/train.txt" || scripts/fetch_training_photos.sh "$DATA"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m mmtok train-vqgan "$DATA/train.txt" --config scripts/default_tokenizer.json \
  --out-dir "$RUN" --export "$RUN/final" --export-fp16 ${RESUME:+--resume "$RUN/checkpoints"}
"$PY" benchmarks/reconstruction.py --model "$RUN/final" --heldout "$DATA/heldout.txt"
