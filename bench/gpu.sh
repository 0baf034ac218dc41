#!/usr/bin/env bash
# Every GPU check and benchmark in one go, for a session lent an H100/H200
# (torch, torchvision, tensorboard, rich, pytest there; no hydra, no internet).
# Sized to finish in under 8 minutes; each step has its own time limit, so a
# stuck step costs its limit, not the session, and the rest still runs.
#
# Before calling it, copy into git-ignored folders of the checkout and carry them:
#   mkdir -p gpu && cp -r ../shared/gpu-wheels gpu/wheels && cp -r ../shared/data .data
# then (device tool):  bash bench/gpu.sh     with carry ["gpu", ".data"]
# Results: JSON and logs under $OUT (or bench/results/gpu-<date>/), one
# steps.json saying which steps passed.
set -uo pipefail
cd "$(dirname "$0")/.."
date_tag=$(date -u +%Y-%m-%d)
out=${OUT:-bench/results/gpu-$date_tag}
mkdir -p "$out" /tmp/site
t_start=$(date +%s)
steps=()

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log, record rc and seconds
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "=== $name (limit ${limit}s, at $(( t0 - t_start ))s)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > >(tee "$out/$name.log") 2>&1
  local rc=$?
  steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}")
  echo "=== $name: rc=$rc in $(( $(date +%s) - t0 ))s"
}

python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"

# Real data in torchvision's layout (decompressed, checksums verified), no download.
step data 60 python3 -c "
from trainer.core.data import prepare
for name in ('mnist', 'fashion_mnist'):
    prepare(name, 'data', ['.data'], download=False)
"
# The GPU tests (they skip without CUDA elsewhere): capture and replay, the speed switches, dashboards.
step tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_capture.py \
  tests/test_dashboards.py::test_cuda_tensors "tests/test_speed_switches.py::test_switch_trains[conv-channels_last-bf16]"

# The quickstart epoch (batch 64, unchanged hyper-parameters): the seed's loop,
# the bare resident loop and the trainer (captured step), same GPU, same accuracy.
step compare 120 python3 bench/run.py compare --data-root data --device cuda --epochs 3 --repeats 2 \
  --out "$out/compare-quickstart.json"

# Time to target accuracy, several seeds (capture and first step reported apart).
step tta-mnist-99 90 python3 bench/run.py tta --data-root data --device cuda --dataset mnist --target 0.99 \
  --seeds 5 --trainer-args "experiment=mnist_speedrun precision=bf16" --out "$out/tta-mnist-99.json"
step tta-mnist-995 90 python3 bench/run.py tta --data-root data --device cuda --dataset mnist --target 0.995 \
  --seeds 3 --trainer-args "experiment=mnist_speedrun_995 precision=bf16" --out "$out/tta-mnist-995.json"
step tta-fashion 90 python3 bench/run.py tta --data-root data --device cuda --dataset fashion_mnist \
  --target 0.92,0.93 --seeds 3 --trainer-args "experiment=fashion_speedrun precision=bf16" \
  --out "$out/tta-fashion.json"

# The conv presets' 3-seed results (three jobs side by side on the one GPU).
step presets 150 python3 bench/results.py --device cuda --data-root data --presets mnist_conv,fashion_conv \
  --jobs 3 --out "$out" precision=bf16

# torchvision's ResNet-18 from scratch (model=torchvision), one seed: the epochs that fit in about 3 minutes
# (a first guess at 15; the one-cycle schedule is fitted to them). fashion_finetune needs ImageNet
# weights in torch's cache, which this offline machine does not have.
step resnet18 200 python3 -m trainer experiment=fashion_resnet18 precision=bf16 epochs=15 seed=0 \
  hydra.run.dir="$out/fashion_resnet18"

printf '%s\n' "${steps[@]}" | python3 -c "
import json, sys
steps = [json.loads(line) for line in sys.stdin]
json.dump({'steps': steps, 'seconds': $(( $(date +%s) - t_start ))}, open('$out/steps.json', 'w'), indent=1)
print('\n'.join(f\"{s['step']:>14}: rc={s['rc']} {s['seconds']}s\" for s in steps))
"
echo "total $(( $(date +%s) - t_start ))s; results in $out"
