#!/usr/bin/env bash
# One device call for the batch-1 decode stack (cuda::decode_stack, issue 4): builds
# duality_tests and duality only, runs its op-test cases and the CUDA model tests (batch-1 passes
# take the stack), its timing test (time per step and per stage), then batch-1 (and 8) decode
# benchmarks of the 130m and 2.7b shapes with the stack on and off (DUALITY_DECODE_STACK=1|0).
#   scripts/gpu-decode-stack.sh [tests|timing|bench|all]     logs under $OUT (or ./gpu-out)
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
source scripts/gpu-env.sh
step build
gpu_build_sm90a "$OUT" duality_tests duality
T=build-gpu/tests/duality_tests
if [[ "$what" == all || "$what" == tests ]]; then
  step "decode_stack op tests"
  timeout 120 $T --gtest_filter='*OpRegistry*decode_stack*' --gtest_brief=1 \
    >"$OUT/stack-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|rel_l2|Failure|error" "$OUT/stack-tests.log" | cut -c1-400 | head -40
  step "CUDA model tests"
  timeout 200 $T --gtest_filter='*Cuda*:-*OpRegistry*' --gtest_brief=1 >"$OUT/cuda-model-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|Failure|error|agree" "$OUT/cuda-model-tests.log" | cut -c1-300 | head -30
fi
if [[ "$what" == all || "$what" == bench || "$what" == timing ]]; then
  step "decode_stack timing (stage breakdown)"
  timeout 120 $T --gtest_also_run_disabled_tests --gtest_filter='DecodeStackTiming.*' \
    >"$OUT/stack-timing.log" 2>&1
  echo "rc $?"; grep -E "decode_stack|per layer|head:|stuck|Failure|error" "$OUT/stack-timing.log" | head -20
fi
if [[ "$what" == all || "$what" == bench ]]; then
  for cfg in mamba2-130m mamba2-2.7b; do
    for on in 1 0; do
      step "decode bench $cfg, DUALITY_DECODE_STACK=$on"
      DUALITY_DECODE_STACK=$on timeout 150 build-gpu/duality bench --random-weights --config "$cfg" \
        --no-prefill --decode-batches 1,8 2>&1 | tee "$OUT/bench-$cfg-stack$on.txt" | grep -E "decode|^ +[0-9]"
    done
  done
fi
