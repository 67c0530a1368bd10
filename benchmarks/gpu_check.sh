#!/usr/bin/env bash
# The CUDA measurements of benchmarks/README.md, in one call of under 6.5 minutes on one GPU:
#   bash benchmarks/gpu_check.sh            (writes benchmarks/results/speed_cuda_*.json and .log)
# 1. The utilization target: workload b (MAE-Large + ResNet-50) at batch 32 and 64, stage 256,
#    fp32 / bf16 autocast / bf16 + channels_last against the per-image reference, with the
#    numerical check; FLOPs counted per step and reported as achieved TFLOP/s and % of the bf16
#    dense peak (H200/H100 SXM: 989 TFLOP/s); Adam for-loop / foreach / fused; 50 consecutive
#    optimize runs must not grow CUDA memory.
# 2. torch.compile (classifier body, MAE encoder and decoder) at batch 32 and 128, next to eager
#    bf16, without the reference (its compile time is its own).
# 3. The full grid (a, b, c x batch 1/4/16 x stage 64/128/256), fp32 / bf16 / bf16+cl, each
#    against the per-image reference on the same inputs, with the numerical check.
# Each part has its own time limit; a part cut short still leaves the rows it finished in its JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

timeout 140 "$PYTHON" -m benchmarks.speed --device cuda --grid gpu-peak --steps 3 --json ${OUT}/speed_cuda_peak.json 2>&1 | tee ${OUT}/speed_cuda_peak.log
peak=${PIPESTATUS[0]}
timeout 120 "$PYTHON" -m benchmarks.speed --device cuda --workloads b --batches 32,128 --sizes 256 --variants bf16,bf16+compile --no-reference --no-adam --leak-runs 0 --repeats 3 --steps 3 --json ${OUT}/speed_cuda_compile.json 2>&1 | tee ${OUT}/speed_cuda_compile.log
compiled=${PIPESTATUS[0]}
timeout 100 "$PYTHON" -m benchmarks.speed --device cuda --grid full --repeats 2 --steps 2 --json ${OUT}/speed_cuda_full.json 2>&1 | tee ${OUT}/speed_cuda_full.log
full=${PIPESTATUS[0]}
echo "exit codes: gpu-peak $peak, compile $compiled, full $full (124 = cut by its time limit; 1 = a numerical check failed)"
[ "$peak" = 0 ] && [ "$compiled" = 0 ] && [ "$full" = 0 ]
