#!/usr/bin/env bash
# The GPU benchmarks of issue 14, as one script with a time limit per part (run it on the GPU machine, from
# the repository root, with .whl/ from benchmarks/gpu_wheels.sh beside it):
#   1. benchmarks/step.py at the paper configuration (ViT-L/16, 224x224, 10 segments, 16 clips per step,
#      bf16 autocast with a bf16 frozen backbone, the configured ZeRO stage; no weights download: random init)
#   2. benchmarks/engine_overhead.py on the GPU (1 rank: the machine has one GPU), ZeRO 0, 1, 2
# Records land in $OUT (when the runner sets it) or benchmarks/results/. Limits: STEP_S (default 270 s) and
# OVERHEAD_S (default 120 s): ~7 minutes with the install, so a rerun fits a 15-minute device budget.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 DS_ACCELERATOR=cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, deepspeed, timm; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'timm', timm.__version__)" \
  || { echo "gpu_check: imports failed"; exit 1; }

status=0
timeout -k 10 "${STEP_S:-270}" python3 benchmarks/step.py --config configs/avel_vitl.yaml --batch 16 --steps 20 \
  --warmup 5 --max-batch 0 --out "$out" model.pretrained=none 2>&1 | grep -v "^\[" | tee "$out/step.log" \
  || status=1
timeout -k 10 "${OVERHEAD_S:-120}" python3 benchmarks/engine_overhead.py --ranks 1 --steps 5 --rounds 2 --no-memory \
  --json "$out/engine_overhead_gpu.json" model.img_size=224 model.mel_bins=128 model.audio_frames=102 \
  data.batch_size=8 2>&1 | grep -v "^\[" | tee "$out/engine_overhead.log" || status=1
exit $status
