#!/usr/bin/env bash
# The GPU checks of one short device session, in one command (about 8 minutes on an H100):
#   1. the CUDA-only tests (every rule x model on the GPU, CUDA draws), which CPU CI skips;
#   2. step-cost on the GPU for the MLP, LeNet and ResNet-18 (the GPU step-cost lines).
# Run from the repository root of a copy with no .git, naming the commit it is:
#   FA_TUTOR_COMMIT=<short hash> OUT=<folder> bash tools/device_check.sh
# Results land in $OUT/results/step-cost.jsonl (append them to results/step-cost.jsonl),
# logs in $OUT/tests.log and $OUT/step-cost.log. DEVICE=cpu QUICK=1 rehearses it on a CPU.
set -u
OUT=${OUT:?set OUT to the folder the results go to}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT/results"
status=0

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/device.txt"

# 1. CUDA-only tests: marked `cuda` or named test_cuda* (-k matches both); 3 minutes at most
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -k cuda --continue-on-collection-errors tests \
  2>&1 | tee "$OUT/tests.log" | tail -n 5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# 2. step-cost on the GPU (ResNet-18 last: the first two models land even if time runs out)
quick=${QUICK:+--quick}
models="mlp lenet resnet18"
[ -n "${QUICK:-}" ] && models="mlp lenet"  # --quick has no ResNet-18 cell
for model in $models; do
  timeout 200 "$PY" -m fa_tutor bench run step-cost $quick --device "$DEVICE" --threads 4 \
    --only model="$model" --out "$OUT/results" 2>&1 | tee -a "$OUT/step-cost.log" | tail -n 2
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
