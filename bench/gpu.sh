#!/usr/bin/env bash
# Every GPU check and benchmark in one go, for a session lent a GPU machine
# (torch, torchvision, tensorboard, rich, pytest there; no hydra, no internet).
# Before calling it, copy into git-ignored folders of the checkout and carry them:
#   cp -r ../shared/gpu-wheels gpu/wheels ; cp -r ../shared/data .data
# then run:  bash bench/gpu.sh [quick|full]      (results under $OUT or bench/results/)
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
out=${OUT:-bench/results}
mkdir -p "$out" /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# Real data in torchvision's layout (decompressed, checksums verified).
python3 -c "
from trainer.data import prepare
for name in ('mnist', 'fashion_mnist'):
    prepare(name, 'data', ['.data'], download=False)
"
# The GPU tests (they skip without CUDA elsewhere).
python3 -m pytest -q tests/test_speed_switches.py tests/test_dashboards.py -k "gpu or cuda" -p no:cacheprovider
# Reference loop vs trainer on the GPU: the quickstart epoch ratio (target <= 0.05x).
python3 bench/run.py --data-root data --device cuda --epochs 2 --repeats 3 --out "$out/gpu-compare.json"
python3 bench/run.py --data-root data --device cuda --epochs 2 --repeats 2 \
  --trainer-args "precision=bf16" --only trainer --out "$out/gpu-compare-bf16.json"
# Time to 99% on MNIST (target <= 0.35 s of training, mean of 3 seeds >= 99.0%).
python3 bench/run.py tta --data-root data --device cuda --dataset mnist --target 0.99 \
  --trainer-args "experiment=mnist_speedrun precision=bf16 channels_last=true" --out "$out/gpu-tta-mnist.json"
python3 bench/run.py batch-sizes --data-root data --device cuda --sizes 64,128,256,512,1024,2048 \
  --out "$out/gpu-batch-sizes.json"
if [ "$mode" = full ]; then
  # The presets' results table (3 seeds each): minutes per preset on one GPU.
  python3 bench/results.py --device cuda --data-root data
  cp bench/results/results-*.md bench/results/results-*.json "$out"/ 2>/dev/null
fi
