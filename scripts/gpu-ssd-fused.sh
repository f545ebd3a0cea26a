#!/usr/bin/env bash
# One device call for the fused SSD work (issue 5): builds duality_tests and duality only, runs
# the SSD op-test cases (five-step, scan, fused), the SSD timing test (five-step vs fused),
# `duality bench --ops` and the whole-model prefill of the 2.7b shape with both SSD paths.
#   scripts/gpu-ssd-fused.sh [tests|timing|source|gate-source|gate-ab|small-ab|rev-ab|proto|all]
#   logs under $OUT (or ./gpu-out); GPU_PACK=1 packs them into one archive a section
#   (scripts/gpu-env.sh), for the device tool's 8-file limit
# source (not part of all): Nsight Compute's source counters (per SASS instruction: executed
# count, shared-memory wavefronts and their excess, i.e. bank conflicts; global sectors; warp
# stalls) of one fused SSD launch at chunk 256, b1 x 32k, 2.7b head shape: fused-sass.csv.gz, for
# scripts/ncu_sass_lines.py (per source line) or Python's csv module.
# gate-source (not part of all): the same for the model's form against the plain kernel (2.7b
# head shape, 8k tokens, chunk 128: `bench --ops` rows ssd_fused/q128 and ssd_fused/q128+gate),
# each kernel's speed of light and instruction counts, and the two SASS pages for
# scripts/ncu_sass_lines.py: the lines whose instructions and warp-stall samples the gate epilogue
# adds (42 µs a layer, docs/ssd-fused-notes.md, next steps).
# gate-ab (not part of all): the gate epilogue's switches (GPU_SSD_AB, default DUALITY_SSD_Z_EARLY=0
# and =1): the gated op cases and CUDA model tests under each, then three rounds of `bench --ops`
# and the whole 2.7b prefill at b1 x 8k with the settings alternating.
# rev-ab (not part of all): this tree's fused SSD against one or more baseline revisions'
# (GPU_BASE, see its section): its op cases and model tests, then the timing test and the 2.7b
# prefill, the trees alternating.
# small-ab (not part of all): the 130m and 370m whole prefill at chunk 256 with pairs of heads
# against the default chunk 128 (docs/ssd-fused-notes.md, next step 0b).
# proto (not part of all): builds and runs only the outputs-phase prototype
# (bench/proto/ssd_outputs_wgmma.cu: today's mma.sync form against warpgroup MMAs on the same
# operands, each checked against a double-precision reference and timed), with its SASS's MMA and
# warpgroup instruction counts per form (GPU_PROTO_REPS='LO HI' to change its repetitions).
# GPU_SSD_AB='SETTING...' (space-separated, each a comma-separated list of VAR=VALUE): the fused
# op tests and the timing test once under each setting (A/B of switches, for example
# GPU_SSD_AB='DUALITY_SSD_DEFER_C=0 DUALITY_SSD_DEFER_C=1').
# Several sections in one call: scripts/gpu-ssd-fused.sh rev-ab source (each after the last; the
# build is shared, a second ninja run is a no-op).
set -uo pipefail
cd "$(dirname "$0")/.."
if (($# > 1)); then
  rc=0
  for section in "$@"; do "$0" "$section" || rc=1; done
  exit $rc
fi
what=${1:-all}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
source scripts/gpu-env.sh
if [[ "$what" == rev-ab ]]; then
  # The baseline trees build beside this one (all long poles, the fused SSD's, at once): base 1, 2, ...
  # in /tmp/duality-base-N, one per archive of GPU_BASE (space-separated, default gpu-base.tgz).
  read -ra base_tgzs <<<"${GPU_BASE:-gpu-base.tgz}"
  base_pids=()
  for n in "${!base_tgzs[@]}"; do
    tgz=${base_tgzs[$n]} dir=/tmp/duality-base-$((n + 1))
    [[ -f "$tgz" ]] || { echo "rev-ab: no $tgz (see the section)" >&2; exit 1; }
    rm -rf "$dir" && mkdir -p "$dir" && cp -r CMakeLists.txt bench cmake include src tests tools "$dir" &&
      tar -xzf "$tgz" -C "$dir"
    sm90a_build "$dir" "$dir/build" "$OUT/base-$((n + 1))-build.log" duality_tests duality &
    base_pids+=($!)
  done
fi
if [[ "$what" == proto ]]; then
  step "build the prototype"
  gpu_build_sm90a "$OUT" duality_proto_ssd_outputs
  P=build-gpu/bench/duality_proto_ssd_outputs
  step "outputs phase: mma.sync against warpgroup MMAs"
  # shellcheck disable=SC2086  # LO HI, two words
  timeout 120 $P ${GPU_PROTO_REPS:-} 2>&1 | tee "$OUT/proto.txt"
  echo "rc ${PIPESTATUS[0]}"
  if command -v cuobjdump >/dev/null; then
    cuobjdump -sass "$P" >"$OUT/proto.sass" 2>&1
    echo "-- SASS per form (instructions; HMMA, HGMMA, WARPGROUP.*, LDSM)"
    awk '/Function :/ {f = $3} f && /\/\*[0-9a-f]+\*\// {n[f]++}
         f && /HMMA/ {h[f]++} f && /HGMMA/ {g[f]++} f && /WARPGROUP/ {w[f]++} f && /LDSM/ {l[f]++}
         END {for (f in n) printf "%s: %d instructions, %d HMMA, %d HGMMA, %d WARPGROUP, %d LDSM\n",
              f, n[f], h[f], g[f], w[f], l[f]}' "$OUT/proto.sass" | sort
  fi
  exit 0
fi
step build
gpu_build_sm90a "$OUT" duality_tests duality
T=build-gpu/tests/duality_tests
settings=${GPU_SSD_AB:-DUALITY_SSD_AB_NONE=1}  # one run with nothing set by default
if [[ "$what" == all || "$what" == tests ]]; then
  step "SSD op tests"
  timeout 200 $T --gtest_filter='*OpRegistry*ssd_chunked*:*OpRegistry*ssd_scan*' --gtest_brief=1 \
    >"$OUT/ssd-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|Failure|error" "$OUT/ssd-tests.log" | head -20
  i=0
  for setting in $settings; do
    i=$((i + 1))
    echo "-- fused op tests under $setting"
    # shellcheck disable=SC2086  # one word per VAR=VALUE pair
    env ${setting//,/ } timeout 200 $T --gtest_filter='*OpRegistry*ssd_fused*' --gtest_brief=1 \
      --gtest_repeat=2 >"$OUT/ssd-fused-tests-$i.log" 2>&1
    echo "rc $?"; grep -E "FAILED|PASSED|rel_l2|Failure|error|ssd_fused/" "$OUT/ssd-fused-tests-$i.log" | cut -c1-300 | head -60
  done
  step "CUDA model tests (bf16 models take the fused path)"
  timeout 150 $T --gtest_filter='*Cuda*:-*OpRegistry*' --gtest_brief=1 >"$OUT/cuda-model-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|Failure" "$OUT/cuda-model-tests.log" | cut -c1-300 | head -20
fi
if [[ "$what" == all || "$what" == timing ]]; then
  step "SSD timing"
  # One file per setting (ssd-timing-1.txt, ...): with several settings the printed lines can
  # outgrow what a device call returns. (With two settings, run `tests` and `timing` as
  # separate calls: together they can pass a call's 600 s.)
  i=0
  for setting in $settings; do
    i=$((i + 1))
    echo "-- timing under $setting (ssd-timing-$i.txt)"
    # shellcheck disable=SC2086  # one word per VAR=VALUE pair
    env ${setting//,/ } timeout 150 $T --gtest_also_run_disabled_tests \
      --gtest_filter='SsdChunkedTiming.*' >"$OUT/ssd-timing-$i.txt" 2>&1; echo "rc $?"
    grep -E "ns/token|FUSED|unsupported|PHASES" "$OUT/ssd-timing-$i.txt" | cut -c1-250
  done
  step "bench --ops"
  timeout 100 build-gpu/duality bench --random-weights --config mamba2-2.7b --ops \
    --prefill-lens 2048,8192,32768 --decode-batches 1 >"$OUT/bench-ops.txt" 2>&1
  grep -E "ssd|peak" "$OUT/bench-ops.txt"
  step "model prefill 2.7b 8k"
  DUALITY_SSD_PATH=five-step timeout 120 build-gpu/duality bench --random-weights \
    --config mamba2-2.7b --prefill-lens 8192 --prefill-batches 1 --no-decode \
    --max-tokens 8192 >"$OUT/bench-model-five-step.txt" 2>&1
  echo "-- five-step"; grep -A3 -E "^prefill" "$OUT/bench-model-five-step.txt"
  i=0
  for setting in $settings; do  # the fused path under each setting
    i=$((i + 1))
    # shellcheck disable=SC2086  # one word per VAR=VALUE pair
    env ${setting//,/ } DUALITY_SSD_PATH=fused timeout 120 build-gpu/duality bench \
      --random-weights --config mamba2-2.7b --prefill-lens 8192 --prefill-batches 1 --no-decode \
      --max-tokens 8192 >"$OUT/bench-model-fused-$i.txt" 2>&1
    echo "-- fused, $setting"; grep -A3 -E "^prefill" "$OUT/bench-model-fused-$i.txt"
  done
fi
if [[ "$what" == gate-ab ]]; then
  # The gate epilogue's A/B (GPU_SSD_AB, default z_early off and on): the gated op cases and the
  # CUDA model tests under each setting, then three rounds, the settings alternating within each,
  # of `bench --ops` (its fused SSD rows, 2.7b at 8k) and the whole 2.7b prefill at b1 x 8k.
  [[ -n "${GPU_SSD_AB:-}" ]] || settings="DUALITY_SSD_Z_EARLY=0 DUALITY_SSD_Z_EARLY=1"
  i=0
  for setting in $settings; do
    i=$((i + 1))
    step "gated op cases and CUDA model tests under $setting"
    # shellcheck disable=SC2086  # one word per VAR=VALUE pair
    env ${setting//,/ } timeout 200 $T --gtest_filter='*OpRegistry*ssd_fused*gate*:CudaModel*:CudaSilu*' \
      --gtest_brief=1 >"$OUT/gate-tests-$i.log" 2>&1
    echo "rc $?"; grep -E "FAILED|PASSED|Failure" "$OUT/gate-tests-$i.log" | cut -c1-300 | head -20
  done
  for round in 1 2 3; do
    i=0
    for setting in $settings; do
      i=$((i + 1))
      step "round $round, $setting"
      # shellcheck disable=SC2086
      env ${setting//,/ } timeout 100 build-gpu/duality bench --random-weights --config mamba2-2.7b \
        --ops --prefill-lens 8192 --decode-batches 1 >"$OUT/gate-ops-$round-$i.txt" 2>&1
      grep -E "ssd_fused" "$OUT/gate-ops-$round-$i.txt" | cut -c1-200
      # shellcheck disable=SC2086
      env ${setting//,/ } timeout 120 build-gpu/duality bench --random-weights \
        --config mamba2-2.7b --prefill-lens 8192 --prefill-batches 1 --no-decode \
        --max-tokens 8192 >"$OUT/gate-model-$round-$i.txt" 2>&1
      grep -A3 -E "^prefill" "$OUT/gate-model-$round-$i.txt" | grep -E "8192" | cut -c1-200
    done
  done
fi
if [[ "$what" == small-ab ]]; then
  # Next step 0b (docs/ssd-fused-notes.md): models with few heads (130m: 24, 370m: 32) might
  # prefill faster at chunk 256 with pairs of heads (no gate epilogue or conv prologue, which need
  # chunks of at most 128) than at the default chunk 128 with both. The whole prefill, b1 at 2k
  # and 8k, default against DUALITY_SSD_FUSED_2PB=0 with DUALITY_SSD_GATE=0 (which gives chunk
  # 256 and pairs with existing switches), alternating twice.
  for round in 1 2; do
    for setting in DUALITY_SSD_AB_NONE=1 DUALITY_SSD_FUSED_2PB=0,DUALITY_SSD_GATE=0; do
      for cfg in mamba2-130m mamba2-370m; do
        step "round $round, $cfg, $setting"
        # shellcheck disable=SC2086  # one word per VAR=VALUE pair
        env ${setting//,/ } timeout 100 build-gpu/duality bench --random-weights --config $cfg \
          --prefill-lens 2048,8192 --prefill-batches 1 --no-decode --max-tokens 8192 \
          >"$OUT/small-$round-$cfg-${setting%%=*}.txt" 2>&1
        grep -A4 -E "^prefill" "$OUT/small-$round-$cfg-${setting%%=*}.txt" | grep -E "2048|8192" |
          cut -c1-160
      done
    done
  done
fi
if [[ "$what" == rev-ab ]]; then
  # This tree's fused SSD against baseline revisions' (GPU_BASE: archives laid over a copy of
  # this tree, made here with `git archive REV $(git diff --name-only --diff-filter=MD REV -- src
  # include tests) | gzip > gpu-base.tgz`, the files that differ and exist at REV, and carried;
  # several, space-separated, for a chain such as v19 against v18 against main; files added since
  # REV stay in the copy, harmless where nothing calls them: for a REV before dcb4b23 the fused
  # SSD's per-head_dim files (ssd_fused_p*.cu) compile but, as static-library members that
  # nothing references, are not linked):
  # the fused op cases of this tree and of the bases numbered in GPU_BASE_TESTS (for example
  # GPU_BASE_TESTS=1) and the CUDA model tests of this tree while the bases build, then the timing
  # test and the whole 2.7b prefill at b1 x 8k, the trees alternating, in GPU_REV_ROUNDS rounds
  # (default 2).
  step "fused op cases (this tree)"
  timeout 120 $T --gtest_filter='*OpRegistry*ssd_fused*' --gtest_brief=1 >"$OUT/rev-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|rel_l2" "$OUT/rev-tests.log" | cut -c1-220 | head -12
  step "CUDA model tests (this tree, while the bases build)"
  timeout 150 $T --gtest_filter='*Cuda*:-*OpRegistry*' --gtest_brief=1 >"$OUT/cuda-model-tests.log" 2>&1
  echo "rc $?"; grep -E "FAILED|PASSED|Failure" "$OUT/cuda-model-tests.log" | cut -c1-300 | head -20
  trees=(this)
  for n in "${!base_pids[@]}"; do
    step "waiting for the build of base $((n + 1)) (${base_tgzs[$n]})"
    wait "${base_pids[$n]}" || { tail -30 "$OUT/base-$((n + 1))-build.log"; exit 1; }
    trees+=($((n + 1)))
  done
  for n in ${GPU_BASE_TESTS:-}; do
    step "fused op cases (base $n)"
    timeout 120 /tmp/duality-base-$n/build/tests/duality_tests --gtest_filter='*OpRegistry*ssd_fused*' \
      --gtest_brief=1 >"$OUT/rev-tests-base-$n.log" 2>&1
    echo "rc $?"; grep -E "FAILED|PASSED|rel_l2" "$OUT/rev-tests-base-$n.log" | cut -c1-220 | head -12
  done
  for round in $(seq "${GPU_REV_ROUNDS:-2}"); do
    for tree in "${trees[@]}"; do
      dir=build-gpu
      [[ "$tree" != this ]] && dir=/tmp/duality-base-$tree/build
      step "round $round, tree $tree"
      timeout 150 $dir/tests/duality_tests --gtest_also_run_disabled_tests \
        --gtest_filter='SsdChunkedTiming.*' >"$OUT/rev-timing-$round-$tree.txt" 2>&1
      grep -E "FUSED" "$OUT/rev-timing-$round-$tree.txt" | cut -c1-100
      timeout 120 $dir/duality bench --random-weights --config mamba2-2.7b --prefill-lens 8192 \
        --prefill-batches 1 --no-decode --max-tokens 8192 >"$OUT/rev-model-$round-$tree.txt" 2>&1
      grep -A3 -E "^prefill" "$OUT/rev-model-$round-$tree.txt" | grep -E "8192" | cut -c1-160
    done
  done
fi
if [[ "$what" == source ]]; then
  step "source counters of the fused SSD (chunk 256, b1 x 32k)"
  DUALITY_GEMM_TUNE=0 timeout 300 ncu --import-source yes --section SourceCounters \
    --section WarpStateStats --kernel-name regex:ssd_fused --launch-count 1 -f -o "$OUT/fused-src" \
    build-gpu/duality bench --random-weights --config mamba2-2.7b --ops --prefill-lens 32768 \
    --no-decode --warmup 0 --iters 1 >"$OUT/ncu-src.log" 2>&1
  echo "rc $?"; tail -3 "$OUT/ncu-src.log"
  # The SASS page (per instruction: executed count, stall samples), gzipped to come back; read it
  # here with scripts/ncu_sass_lines.py OUT/fused-sass.csv.gz src/ops/cuda/ssd_fused_p64.cu
  # --lines-of src/ops/cuda/ssd_fused_kernel.cuh (this Nsight Compute's CUDA page has no counters). The report itself is too large to come back.
  ncu -i "$OUT/fused-src.ncu-rep" --page source --csv --print-source sass >"$OUT/fused-sass.csv" 2>&1
  echo "rc $? sass: $(wc -lc <"$OUT/fused-sass.csv")"; head -2 "$OUT/fused-sass.csv" | cut -c1-300
  gzip -f "$OUT/fused-sass.csv"
  ncu -i "$OUT/fused-src.ncu-rep" --page details >"$OUT/fused-details.txt" 2>&1
  grep -E "Duration|Excess|Wavefronts|Sectors|bank" "$OUT/fused-details.txt" | head -20
  rm -f "$OUT/fused-src.ncu-rep"
fi
if [[ "$what" == gate-source ]]; then
  # With --warmup 0 --iters 1 each row launches once: ssd_fused launches 0 (the config's chunk),
  # 1 (q128) and 2 (q128+gate).
  for spec in 1:plain 2:gate; do
    skip=${spec%%:*}
    name=${spec#*:}
    step "source counters of the fused SSD, $name (chunk 128, b1 x 8k)"
    DUALITY_GEMM_TUNE=0 timeout 240 ncu --import-source yes --section SourceCounters \
      --section WarpStateStats --section SpeedOfLight --section InstructionStats \
      --kernel-name regex:ssd_fused --launch-skip "$skip" --launch-count 1 -f -o "$OUT/gate-$name" \
      build-gpu/duality bench --random-weights --config mamba2-2.7b --ops --prefill-lens 8192 \
      --no-decode --warmup 0 --iters 1 >"$OUT/ncu-gate-$name.log" 2>&1
    echo "rc $?"; tail -2 "$OUT/ncu-gate-$name.log"
    ncu -i "$OUT/gate-$name.ncu-rep" --page details >"$OUT/gate-$name-details.txt" 2>&1
    grep -E "Duration|Executed Instructions|Issued Warp|Eligible|Warp Cycles Per Issued|Registers" \
      "$OUT/gate-$name-details.txt" | head -8
    ncu -i "$OUT/gate-$name.ncu-rep" --page source --csv --print-source sass \
      >"$OUT/gate-$name-sass.csv" 2>&1
    gzip -f "$OUT/gate-$name-sass.csv"
    rm -f "$OUT/gate-$name.ncu-rep"
  done
  # Per source line, here (the same source revision and nvcc as the device's build):
  # scripts/ncu_sass_lines.py OUT/gate-plain-sass.csv.gz src/ops/cuda/ssd_fused_p64.cu \
  #   --lines-of src/ops/cuda/ssd_fused_kernel.cuh --against OUT/gate-gate-sass.csv.gz
fi
rm -f "$OUT/gpu.txt" "$OUT/ssd-tests.log"
step done
