#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU and a CUDA build of torch (e.g. a lent device machine,
# whose python3 already has torch, triton, pytest, numpy, pillow, pyyaml and safetensors):
#   1. build mmtok._C in place with the CUDA kernels (sm_90a by default: MMTOK_CUDA_ARCHS="80;90a" for both),
#   2. the op's tests (CUDA and Triton backends against the torch reference) and the image tokenizer's tests,
#   3. benchmarks/nearest_code.py (CUDA / Triton / torch columns at N = 1M, fp32 and bf16) and
#      benchmarks/image_tokenizer.py --compile (images/s, fp32 / bf16 / bf16 + compile vs the upstream-style forward).
# Logs and JSON go to $OUT (default gpu_out/): at most 8 files, each step time-limited so the whole run stays
# under about 9 minutes. Exits non-zero if the build or a test fails (the benchmarks still run after a test failure).
#   scripts/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 MMTOK_CUDA_ARCHS=${MMTOK_CUDA_ARCHS:-90a}
mkdir -p "$OUT"
status=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
} | tee "$OUT/env.txt"

echo "== build (in place, archs $MMTOK_CUDA_ARCHS)"
if ! timeout 300 "$PY" setup.py -q build_ext --inplace -j "$(nproc)" >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "build failed (full log: $OUT/build.log)"; exit 1
fi
"$PY" -m mmtok info 2>&1 | tee -a "$OUT/env.txt"

echo "== tests"
timeout 200 "$PY" -m pytest -q -ra -p no:cacheprovider tests/test_nearest_code.py tests/test_image_tokenizer.py \
  2>&1 | tee "$OUT/tests.log" || status=1

echo "== benchmarks"
timeout 150 "$PY" benchmarks/nearest_code.py --quick --skip-memory 2>&1 | tee "$OUT/bench_nearest_code.log"
timeout 150 "$PY" benchmarks/image_tokenizer.py --compile --batch 16 --out "$OUT/image_tokenizer.json" \
  2>&1 | tee "$OUT/bench_image_tokenizer.log"
cp benchmarks/results/nearest_code.json "$OUT/" 2>/dev/null
exit $status
