#!/usr/bin/env bash
# bench/gpu.sh: the GPU part of the benchmarks, as ONE prepared run on one lent GPU (a few minutes, 15 at most).
#
# Why a script: a lent GPU machine is bare (its python3 has CUDA torch but no diffusers) and its time is short, so
# everything it needs is decided here: the wheels it installs, what it measures, where the result goes.
#
# What it does (see bench/gpu_components.py): fp16 per-component latency of real-size SD 1.5 (512 px), SD 2.1
# (768 px) and SDXL (1024 px) UNets under the preset splits for N = 2, 3, 4, S = 1, 2; the exact per-step traffic
# from the library's own trace/routing; a device-to-device copy bandwidth; and projected N-GPU speedups
# (critical path = slowest component + glue + communication; 50 steps, warm_up 1); and the 2- and 4-device rows of
# issue 11 side by side: CFG parallel (model_n 1, 2 GPUs) vs AsyncDiff N2, CFG parallel x AsyncDiff N2 (4 GPUs) vs
# AsyncDiff N4, from the same latencies measured at batch 1 (one guidance half). AsyncDiff itself is NOT run:
# it needs >= 2 ranks, and NCCL refuses two ranks on one device, so the library's CUDA exactness test cannot run on
# one GPU (the CPU/gloo exactness tests cover it; see README "What is tested where").
#
# Then the batch throughput table (bench/batch_gpu.py): the same job as replicas 1 x modelN 1, replicas 2 x modelN 1
# and replicas 1 x modelN 2 through the worker's local runner (each group its own GPU when there are enough; rows
# that need more GPUs than the machine has are skipped with the reason, or say the groups shared a GPU).
#
# Prepare (here, once; .whl/ is git-ignored):
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata \
#     pydantic pydantic-core annotated-types typing-inspection typing-extensions pyyaml
# Run on the device machine (the device tool's `run`, with carry [".whl"], timeout_s 480), one part per call:
#   OUT=$OUT bash bench/gpu.sh components        then        OUT=$OUT bash bench/gpu.sh batch
# Results: $OUT/gpu_components.json and $OUT/gpu.log (copy the JSON to bench/results/ and re-run
# `python -m bench.run_all --only traffic` or any part: the summary then shows the GPU projection).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/worker:$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.log"
PARTS="${1:-components batch}"   # one device call is at most 10 min: run `bash bench/gpu.sh batch` as its own call
if [[ " $PARTS " == *" components "* ]]; then
  timeout 420 python3 -m bench.gpu_components --device cuda --out "$OUT/gpu_components.json" 2>&1 | tee -a "$OUT/gpu.log"
fi
if [[ " $PARTS " == *" batch "* ]]; then
  timeout 300 python3 -m bench.batch_gpu --out "$OUT/batch_gpu.json" 2>&1 | tee -a "$OUT/gpu.log" || true
fi
