#!/usr/bin/env bash
# What only a GPU shows, in one go within a time budget (about 9 minutes on one H200):
#   1. the demo's --quick smoke run on CUDA (every stage's code path on the GPU);
#   2. backbone inference throughput, batch 64 (the paper's), fp32 / channels_last / bf16 channels_last;
#   3. the training engine against a hand-written loop, ResNet-50, batch 64, 224 px, bf16 channels_last;
#   4. the torch kNN backend on the GPU at SOP test size (1536-d), against FAISS IndexFlatIP on the CPU;
#   5. the whole demo trained on the GPU (its summary, stage seconds and report);
#   6. compiled bf16 channels_last throughput of the headline pair, with what time is left.
#
#   bash benchmarks/gpu.sh OUT [SECONDS]     # SECONDS: the budget for all steps (default 540)
#
# Each step's output goes to OUT (JSON and markdown as the benchmarks write them; the demo's files under
# OUT/demo/); a step that fails or runs out of time is logged and the next one runs.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT [SECONDS]}
budget=${2:-540}
py=${PYTHON:-python3}
mkdir -p "$out/demo"
end=$((SECONDS + budget))
scratch=$(mktemp -d)

step() {  # step LIMIT CMD...: run CMD for at most LIMIT seconds, and never past the budget
  local limit=$1 left=$((end - SECONDS))
  shift
  ((left < limit)) && limit=$left
  if ((limit < 10)); then echo "== skipped (budget spent): $*"; return; fi
  echo "== [$(date +%T), ${limit}s] $*"
  local t=$SECONDS
  timeout "$limit" "$@"
  echo "== exit $? after $((SECONDS - t)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

step 100 "$py" -m transfer demo --quick --out "$scratch/quick" --workers 4
step 150 "$py" benchmarks/backbones.py --device cuda --batch-size 64 --warmup 3 --repeats 15 \
  --settings fp32 cl bf16_cl --out "$out" --name backbones_gpu
step 90 "$py" benchmarks/engine.py --only engine --device cuda --precision bf16 --channels-last \
  --model resnet50 --batch-size 64 --resolution 224 --steps 20 --rounds 5 --out "$out/engine"
# one dimension: the CPU FAISS baseline beside it takes about 50 s at 1536-d even on 16 cores
step 120 "$py" benchmarks/retrieval.py --dims 1536 --backends torch --approx "" --out "$out/retrieval"
step 240 "$py" -m transfer demo --out "$scratch/demo" --workers 6
for f in summary.json demo.json report.md; do cp "$scratch/demo/$f" "$out/demo/" 2>/dev/null; done
step 200 "$py" benchmarks/backbones.py --device cuda --batch-size 64 --warmup 3 --repeats 15 \
  --settings compile_bf16_cl --update --no-blur --models torchvision:resnet50 resnet50 assemble_resnet50 \
  --out "$out" --name backbones_gpu
rm -rf "$scratch"
