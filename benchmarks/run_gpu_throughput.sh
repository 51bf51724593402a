#!/bin/bash
# Issue 15's GPU measurements in one lease, about 6-7 minutes on an H200:
#   1. gpu_ablate.py: training BN (flax) vs the fused BN (bn_fused,
#      bn_fused_sib) vs no norm: step time, XLA's bytes, the BN's share;
#   2. gpu_resnet50.py --device_augment: SimCLR with and without the
#      size-keeping ops in the step (the ms they add) and supervised;
#   3. gpu_feed.py: the SimCLR step fed from host memory each step vs on
#      the device, without and with augment_on_device.
# Needs .whl/ml_collections-*.whl (see run_gpu.sh). Logs go to $OUT (the
# device tool's output folder) or /tmp. A compilation cache shared by the
# three saves the repeated SimCLR compiles. SMOKE=1 runs each on a tiny
# ResNet (a CPU check of this script).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
smoke=${SMOKE:+--smoke}
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
timeout 200 bash benchmarks/run_gpu.sh benchmarks/gpu_ablate.py \
    --variants bn_train bn_fused bn_fused_sib no_norm $smoke 2>&1 \
    | tee "$out/gpu_ablate.log"
timeout 150 bash benchmarks/run_gpu.sh --jobs simclr supervised \
    --device_augment $smoke 2>&1 | tee "$out/gpu_resnet50.log"
timeout 120 bash benchmarks/run_gpu.sh benchmarks/gpu_feed.py $smoke 2>&1 \
    | tee "$out/gpu_feed.log"
