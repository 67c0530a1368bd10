#!/usr/bin/env bash
# The CUDA measurements of benchmarks/README.md, in one call of under 9 minutes on one GPU:
#   bash benchmarks/gpu_check.sh            (writes benchmarks/results/speed_cuda_*.json and .log)
# 0. If pytest is there: tests/test_step_graph.py, whose CUDA tests capture the step as a graph and
#    compare it step by step with the same run uncaptured (tiny models, seconds).
# 1. The utilization target: workload b (MAE-Large + ResNet-50) at batch 32, 64 and 128, stage
#    256: eager bf16, bf16 + channels_last, and the same with the whole step as one CUDA graph
#    (OptimizeConfig.cuda_graph), against the per-image reference, with the numerical check (and
#    for +graph, the captured run against the uncaptured one); 12 steps per timed run, so the
#    steady-state ms/step (after the 3 warm-up steps and the capture) is measured too; FLOPs
#    counted per step and reported as achieved TFLOP/s and % of the bf16 dense peak (H200/H100
#    SXM: 989 TFLOP/s); Adam for-loop / foreach / fused; 50 consecutive optimize runs must not grow
#    CUDA memory.
# 2. Where the time goes (benchmarks/profile_step.py): 5 steady-state steps of b at batch 64,
#    bf16 + channels_last, eager and as a CUDA graph, under torch.profiler: GPU-busy vs wall time,
#    time by kind of kernel with the TFLOP/s each kind reaches, the top kernels.
# 3. BatchNorm folding (the CPU fp32 default) under bf16 on CUDA, as a graph, against the graph
#    alone, at batch 64, with the reference check: ResNet-50 passed its bf16 check folded on the CPU
#    (2026-11-28), Lite0 did not, on either device; this measures what it would save on a GPU.
# 4. torch.compile of the step's forward (OptimizeConfig.compile), alone and under the CUDA graph,
#    next to the graph alone, at batch 64, without the reference (compile time is its own).
# 5. Only with FULL=1: the full grid (a, b, c x batch 1/4/16 x stage 64/128/256) against the
#    reference (it ran twice on 2026-11-28: benchmarks/results/cuda_run{1,2}).
# Each part has its own time limit; a part cut short still leaves the rows it finished in its JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

tests=skipped
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  timeout 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_step_graph.py -k cuda 2>&1 | tee ${OUT}/cuda_step_graph_tests.log
  tests=${PIPESTATUS[0]}
fi
timeout 210 "$PYTHON" -m benchmarks.speed --device cuda --grid gpu-peak --steps 12 --reference-steps 1 --json ${OUT}/speed_cuda_peak.json 2>&1 | tee ${OUT}/speed_cuda_peak.log
peak=${PIPESTATUS[0]}
timeout 70 "$PYTHON" -m benchmarks.profile_step --device cuda --workload b --batch 64 --size 256 --variants bf16+cl,bf16+cl+graph --steps 5 --json ${OUT}/profile_cuda.json 2>&1 | tee ${OUT}/profile_cuda.log
profiled=${PIPESTATUS[0]}
timeout 60 "$PYTHON" -m benchmarks.speed --device cuda --workloads b --batches 64 --sizes 256 --variants bf16+cl+graph,bf16+cl+fold+graph --reference-steps 1 --no-adam --leak-runs 0 --repeats 2 --steps 12 --json ${OUT}/speed_cuda_fold.json 2>&1 | tee ${OUT}/speed_cuda_fold.log
folded=${PIPESTATUS[0]}
timeout 130 "$PYTHON" -m benchmarks.speed --device cuda --workloads b --batches 64 --sizes 256 --variants bf16+cl+graph,bf16+cl+compile,bf16+cl+compile+graph --no-reference --no-adam --leak-runs 0 --repeats 2 --steps 12 --json ${OUT}/speed_cuda_compile.json 2>&1 | tee ${OUT}/speed_cuda_compile.log
compiled=${PIPESTATUS[0]}
full=skipped
if [ "${FULL:-0}" = 1 ]; then
  timeout 100 "$PYTHON" -m benchmarks.speed --device cuda --grid full --repeats 2 --steps 2 --json ${OUT}/speed_cuda_full.json 2>&1 | tee ${OUT}/speed_cuda_full.log
  full=${PIPESTATUS[0]}
fi
echo "exit codes: tests $tests, gpu-peak $peak, profile $profiled, fold $folded, compile $compiled, full $full (124 = cut by its time limit; 1 = a check failed)"
[ "$tests" != 1 ] && [ "$peak" = 0 ] && [ "$compiled" = 0 ] && [ "$full" != 1 ] && [ "$full" != 124 ]
