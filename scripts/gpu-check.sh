#!/usr/bin/env bash
# Builds duality with CUDA on a GPU machine (all cores), runs the CUDA tests (the op-test
# registry and the whole-model CUDA tests), the rest of the suite, and the benchmarks.
# Every session uses this script so GPU numbers stay comparable.
#
#   scripts/gpu-check.sh [tests|bench|serve|profile|conv|conv-profile|split|state|timeline|trace|ab|prefill-ab|build|all]
#   (default: all)
#
# build: only the build (then `source scripts/gpu-env.sh` and run build-gpu/duality yourself).
# GPU_CHECK_QUICK=1: `tests` (and `all`) run the CUDA tests only, not the rest of the suite (about 140 s of
# device time that CI covers on the CPU).
#
# profile (not part of all): per-kernel GPU times and DRAM bytes from Nsight Compute for one
# 2.7b decode step at batch 64 and 1, a 17-token and an 8k-token prefill, as CSV for
# scripts/ncu_summary.py,
# and the decode GEMM's and cuBLASLt's speed of light, memory and warp stalls at 8 and 64 rows.
#
# split (not part of all): the split-k out_proj (DUALITY_OUT_PROJ_SPLIT): its op cases and
# model test, GemmSplitTiming (raw cuBLASLt), cuBLASLt's tuning log for out_proj whole and split at
# 64 rows, and 2.7b / 130m decode at 32 and 64 sequences with 1, 2 and 4 parts, twice.
#
# state (not part of all): the batched decode step's state streaming: ssm_decode's op cases,
# StateStreamTiming (a device copy and read-modify-write streams of one 2.7b batch-64 layer's
# state against ssm_decode's bulk kernel in 1, 2 and 4 parts per head and its vector kernel), then
# 2.7b / 130m decode at 8, 32 and 64 sequences with each (DUALITY_SSM_DECODE_BULK, _BULK_PARTS).
#
# timeline (not part of all): Nsight Systems on 20 timed decode steps (the NVTX range bench_decode,
# graph nodes traced one by one) of the shapes in GPU_CHECK_MODELS (default mamba2-2.7b) at the
# batches in GPU_CHECK_BATCHES (default 1,64): each kernel's mean time INSIDE a step, with the
# overlap and PDL that Nsight Compute's one-kernel-at-a-time replay (profile) leaves out; and the
# last step's GPU activity in order (kernels and copies, with the idle gaps between them), which
# shows what a step spends outside its graph. GPU_CHECK_PREFILL_LENS (for example 8192) traces
# batch-1 prefills of those lengths the same way (and only them unless GPU_CHECK_BATCHES is set).
#
# trace (not part of all): the same question without Nsight Systems (which the device machines
# lack): `duality bench` decode of GPU_CHECK_MODELS (default mamba2-2.7b mamba2-130m) at
# GPU_CHECK_BATCHES (default 1), 32 steps, under the CUPTI injection library
# (tools/kernel_trace), and scripts/kernel_trace_summary.py on the last 16 steps: per kind of
# kernel its duration, how early it started and its share of the step's span.
# GPU_CHECK_PREFILL_LENS (for example 8192) traces batch-1 prefills of those lengths instead,
# summarized by scripts/prefill_trace_summary.py over the last 3 passes.
# GPU_CHECK_TRACE_ENV: comma-separated VAR=VALUE pairs for those runs.
#
# conv (not part of all): the prefill folds into the fused SSD (Δ from raw dt, DUALITY_SSD_DT; x's
# conv1d, DUALITY_SSD_CONV): their op cases, then prefill b1 x 2k and 8k with neither, Δ only and
# both, twice each, for the shapes in GPU_CHECK_MODELS (default 130m, 370m, 1.3b, 2.7b).
# conv-profile (not part of all): Nsight Compute per-kernel times of a 2.7b 8k prefill with the
# conv prologue off and on, plus the fused SSD kernel's speed of light, occupancy and warp stalls.
#
# ab (not part of all): decode A/B of any settings. GPU_CHECK_AB holds them, space-separated, each
# a comma-separated list of VAR=VALUE put in the environment of its runs (for example
# GPU_CHECK_AB='DUALITY_PDL_EARLY=1 DUALITY_PDL_EARLY=0'); decode of the shapes in GPU_CHECK_MODELS
# (default 'mamba2-2.7b mamba2-130m'), twice each, at the batches in GPU_CHECK_BATCHES (default
# 1,8,32,64); first the tests matching GPU_CHECK_FILTER (a gtest filter), if given, once under
# each setting.
# prefill-ab (not part of all): the same for batch-1 prefill: the shapes in GPU_CHECK_MODELS
# (default mamba2-2.7b) at the lengths in GPU_CHECK_PREFILL_LENS (plain numbers, default
# 2048,8192), GPU_CHECK_ROUNDS rounds (default 3) of the settings in turn; GPU_CHECK_FILTER as
# for ab.
#
# Logs and JSON go to $OUT (the device tool's output folder) or ./gpu-check-out; with GPU_PACK=1
# they end up in one archive there (scripts/gpu-env.sh), for the device tool's 8-file limit.
# On a machine without the Debian -dev packages (the device machines have CUDA, CMake and ninja
# but no package registry), run scripts/fetch-gpu-deps.sh here first and carry .deps/: this
# script unpacks those packages into a private prefix and builds against them.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"

source scripts/gpu-env.sh

nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/gpu.txt"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
[[ "$cap" == 90 ]] && cap=90a

step "build (sm_$cap, $(nproc) jobs)"
# Warnings are errors in CI (GCC 12); the GPU machine's GCC 13 has false positives of its own.
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDUALITY_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$cap" -DDUALITY_WERROR=OFF >"$OUT/cmake.log" 2>&1 ||
  { tail -40 "$OUT/cmake.log"; exit 1; }
# ab and prefill-ab build only what they run (the CLI, and the test binary for GPU_CHECK_FILTER):
# on a fresh device machine the build is most of such a call.
targets=()
if [[ "$what" == ab || "$what" == prefill-ab ]]; then
  targets=(duality)
  [[ -n "${GPU_CHECK_FILTER:-}" ]] && targets+=(duality_tests)
elif [[ "$what" == trace ]]; then
  targets=(duality)  # and the CUPTI library where CMake found CUPTI
  ninja -C build-gpu -t targets all | grep '^duality_kernel_trace:' >/dev/null &&
    targets+=(duality_kernel_trace)
fi
ninja -C build-gpu -j "$(nproc)" "${targets[@]}" 2>&1 | tail -5

status=0
# decode_ab FILE BATCHES SETTING...: decode of the 2.7b and 130m shapes (random weights) at the
# comma-separated BATCHES, twice, once per SETTING (comma-separated VAR=VALUE pairs put in the
# environment of that run): one line per run (batch, ms per step, fraction of the bound) to
# stdout and FILE.
decode_ab() {
  local file=$1 batches=$2 cfg rep setting
  shift 2
  : >"$file"
  # shellcheck disable=SC2086  # one word per model
  for cfg in ${GPU_CHECK_MODELS:-mamba2-2.7b mamba2-130m}; do
    for rep in 1 2; do
      for setting in "$@"; do
        # shellcheck disable=SC2086  # one word per VAR=VALUE pair
        env ${setting//,/ } build-gpu/duality bench --random-weights --config "$cfg" \
          --no-prefill --decode-batches "$batches" >"$OUT/ab-bench.txt" 2>&1 || status=1
        echo "$cfg $setting: $( (grep -E "^ +(${batches//,/|}) " "$OUT/ab-bench.txt" || true) |
          awk '{printf "%s %s %s | ", $1, $2, $NF}')" | tee -a "$file"
      done
    done
  done
}
# prefill_ab FILE LENS SETTING...: batch-1 prefill of the shapes in GPU_CHECK_MODELS (default
# 2.7b) at the comma-separated LENS, GPU_CHECK_ROUNDS times (default 3), the settings alternating
# within a round: one line per run (length, ms, tokens/s) to stdout and FILE.
prefill_ab() {
  local file=$1 lens=$2 cfg rep setting
  shift 2
  : >"$file"
  # shellcheck disable=SC2086  # one word per model
  for cfg in ${GPU_CHECK_MODELS:-mamba2-2.7b}; do
    for rep in $(seq "${GPU_CHECK_ROUNDS:-3}"); do
      for setting in "$@"; do
        # shellcheck disable=SC2086  # one word per VAR=VALUE pair
        env ${setting//,/ } build-gpu/duality bench --random-weights --config "$cfg" --no-decode \
          --prefill-lens "$lens" --prefill-batches 1 >"$OUT/ab-bench.txt" 2>&1 || status=1
        echo "$cfg $setting: $( (grep -E "^ +1 +(${lens//,/|}) " "$OUT/ab-bench.txt" || true) |
          awk '{printf "%s: %s ms %s tok/s | ", $2, $3, $4}')" | tee -a "$file"
      done
    done
  done
}
if [[ "$what" == all || "$what" == tests ]]; then
  step "CUDA tests (op registry + whole model)"
  # Line-buffered (stdbuf -oL): under an outer timeout a killed run still leaves the failures so
  # far in the log (block-buffered into the pipe, a killed run's log was empty). On an H200
  # (2026-12-07) this step took 270 s and more (335 s did not finish it on a fresh machine): give
  # `GPU_CHECK_QUICK=1 ... tests` about 8 minutes with the build.
  stdbuf -oL build-gpu/tests/duality_tests --gtest_filter='*OpRegistry*:*Cuda*' --gtest_brief=1 \
    2>&1 | tee "$OUT/cuda-tests.log" | tail -60 || status=1
  # On Hopper every case above ran with the early reads before pdl::wait() (core/cuda/pdl.cuh);
  # the kernels that have them, once more with the reads after the wait (as on other GPUs).
  step "CUDA tests of the kernels with early reads, DUALITY_PDL_EARLY=0"
  DUALITY_PDL_EARLY=0 stdbuf -oL build-gpu/tests/duality_tests --gtest_brief=1 \
    --gtest_filter='*CudaMatchesCpu/ssm_decode*:*CudaMatchesCpu/conv1d*:*CudaMatchesCpu/gemm_*m1_*:*CudaMatchesCpu/gemv_fused*' \
    2>&1 | tee "$OUT/cuda-tests-late.log" | tail -4 || status=1
  # The fused SSD as it runs on long grids, which the op cases' short ones do not reach: the early
  # S wait (by default from 48 blocks per SM) forced on, beside the deferred C loads.
  step "fused SSD op cases with DUALITY_SSD_EARLY_S_WAIT=1"
  DUALITY_SSD_EARLY_S_WAIT=1 stdbuf -oL build-gpu/tests/duality_tests --gtest_brief=1 \
    --gtest_filter='*CudaMatchesCpu/ssd_fused*' 2>&1 | tee "$OUT/cuda-tests-ssd.log" | tail -4 ||
    status=1
  if [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
    echo "GPU_CHECK_QUICK=1: the rest of the suite (CPU tests, run by CI anyway) is skipped"
  else
    step "the rest of the suite"
    # Tests that read ../shared (eval corpora, tokenizer vectors) run only where it is present.
    skip='OpRegistry|Cuda'
    [[ -d ../shared/data ]] || skip+='|TokenizerVectors|Tokenizer.LoadsFromFolderOrFile|Tokenizer.ConcurrentEncodesAgree|tokenizer_matches_hf'
    ctest --test-dir build-gpu -j "$(nproc)" -LE slow -E "$skip" --output-on-failure \
      >"$OUT/ctest.log" 2>&1 || status=1
    tail -5 "$OUT/ctest.log"
  fi
fi
if [[ "$what" == all || "$what" == bench ]]; then
  step "benchmarks"
  # The SM clock, power and throttle reasons every 200 ms while the model benchmarks run: long
  # 2.7b prefills hit the software power cap (reason 0x4) and lose 15-20% of the clock
  # (docs/architecture.md, "Prefill time"), so numbers from different machines need this beside.
  nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_event_reasons.active --format=csv,noheader,nounits \
    -lms 200 >"$OUT/clocks.txt" 2>/dev/null &
  smi=$!
  for cfg in mamba2-130m mamba2-2.7b; do
    build-gpu/duality bench --random-weights --config "$cfg" 2>&1 | tee "$OUT/bench-$cfg.txt" || status=1
  done
  kill "$smi" 2>/dev/null || true
  python3 - "$OUT/clocks.txt" <<'PY' || true
import sys
rows = [l.split(",") for l in open(sys.argv[1]) if l.count(",") == 2]
mhz = sorted(int(float(r[0])) for r in rows)
if mhz:
    capped = sum(int(r[2].strip(), 16) & 0x4 != 0 for r in rows)
    print(f"SM clock during the model benchmarks: min {mhz[0]} / median {mhz[len(mhz) // 2]} / "
          f"max {mhz[-1]} MHz over {len(mhz)} samples; power-capped in {capped} "
          f"({100 * capped / len(mhz):.0f}%), peak {max(float(r[1]) for r in rows):.0f} W")
PY
  build-gpu/duality bench --random-weights --config mamba2-2.7b --ops 2>&1 | tee "$OUT/bench-ops-2.7b.txt" || status=1
  build-gpu/tests/duality_tests --gtest_also_run_disabled_tests --gtest_filter='SsdChunkedTiming.*' \
    2>&1 | grep -E "ns/token" | tee "$OUT/ssd-timing.txt" || status=1
  # The batch-1 products against a read stream of the same bytes (tests/ops/cuda/timing_gemv.cpp).
  build-gpu/tests/duality_tests --gtest_also_run_disabled_tests --gtest_filter='GemvTiming.*' \
    2>&1 | grep -vE '^\[|^Running main|^Note:' | tee "$OUT/gemv-timing.txt" || status=1
  # What a kernel boundary costs without model math (tests/ops/cuda/timing_pdl_chain.cpp).
  build-gpu/tests/duality_tests --gtest_also_run_disabled_tests --gtest_filter='PdlChainTiming.*' \
    2>&1 | grep -vE '^\[|^Running main|^Note:' | tee "$OUT/chain-timing.txt" || status=1
fi
if [[ "$what" == conv ]]; then
  step "SsdConv / RawDt: op cases"
  build-gpu/tests/duality_tests --gtest_filter='*CudaMatchesCpu/ssd_fused*:*CudaMatchesCpu/conv1d*' \
    --gtest_brief=1 2>&1 | tail -3 || status=1
  step "prefill A/B (b1, ms at 2k and 8k): no fold, Δ in the SSD, Δ and x's conv in the SSD"
  # shellcheck disable=SC2086  # one word per model
  for cfg in ${GPU_CHECK_MODELS:-mamba2-130m mamba2-370m mamba2-1.3b mamba2-2.7b}; do
    for rep in 1 2; do
      for setting in DUALITY_SSD_CONV=0,DUALITY_SSD_DT=0 DUALITY_SSD_CONV=0 DUALITY_SSD_CONV=1; do
        # shellcheck disable=SC2086  # one word per VAR=VALUE pair
        env ${setting//,/ } build-gpu/duality bench --random-weights --config "$cfg" --no-decode \
          --prefill-lens 2048,8192 --prefill-batches 1 >"$OUT/conv-bench.txt" 2>&1 || status=1
        echo "$cfg $setting: $(grep -E '^ +1 +(2048|8192) ' "$OUT/conv-bench.txt" |
          awk '{printf "%s: %s ms %s tok/s | ", $2, $3, $4}')" | tee -a "$OUT/conv-ab.txt"
      done
    done
  done
fi
if [[ "$what" == conv-profile ]]; then
  for on in 0 1; do
    step "SsdConv=$on: per-kernel times of a 2.7b 8k prefill (ncu)"
    DUALITY_SSD_CONV=$on DUALITY_GEMM_TUNE=0 ncu --clock-control none --csv --print-units base \
      --nvtx --nvtx-include "bench_prefill/" --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      build-gpu/duality bench --random-weights --config mamba2-2.7b --no-decode --prefill-lens 8192 \
      --prefill-batches 1 --warmup 0 >"$OUT/ncu-conv$on.csv" 2>"$OUT/ncu-conv$on.err" || status=1
    python3 scripts/ncu_summary.py "$OUT/ncu-conv$on.csv" | tee "$OUT/ncu-conv$on.txt" | head -12 || status=1
    DUALITY_SSD_CONV=$on DUALITY_GEMM_TUNE=0 ncu --clock-control none --kernel-name regex:ssd_fused \
      --nvtx --nvtx-include "bench_prefill/" --launch-skip 4 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section Occupancy --section LaunchStats --section SchedulerStats \
      build-gpu/duality bench --random-weights --config mamba2-2.7b --no-decode --prefill-lens 8192 \
      --prefill-batches 1 --warmup 0 >"$OUT/ncu-fused-conv$on.txt" 2>&1 || status=1
    grep -E 'Duration|Throughput|Stall|Warp Cycles|Registers|Occupancy|Eligible|Issued' \
      "$OUT/ncu-fused-conv$on.txt" | head -40 || true
  done
fi
if [[ "$what" == all || "$what" == serve ]]; then
  # The server on the CUDA backend: the CPU suite's HTTP tests with the bundled model, then the
  # serving benchmark on the 2.7b shape (random weights): 64 concurrent streams, and a 4k-token
  # conversation answered cold and from the state cache.
  # In f32: bf16 GEMMs round differently for different batch sizes, which can flip a greedy
  # near-tie between a request run alone and the same request among others (docs/numerics.md).
  step "server tests (CUDA backend, f32, bundled model)"
  DUALITY_DTYPE=f32 python3 tests/server/test_server_api.py --duality build-gpu/duality \
    --device cuda 2>&1 | tee "$OUT/server-tests.log" | tail -25 || status=1
  step "serving benchmark (mamba2-2.7b, random weights, 64 concurrent streams)"
  python3 scripts/bench_serve.py --duality build-gpu/duality --requests 256 --concurrency 64 \
    --prompt-len 64-512 --max-tokens 256 --multi-turn-fraction 0 \
    --random-weights --config mamba2-2.7b --device cuda --max-seqs 64 \
    2>&1 | tee "$OUT/bench-serve-2.7b.txt" || status=1
  step "cold vs cached 4k-token history (mamba2-2.7b)"
  python3 scripts/bench_serve.py --duality build-gpu/duality --cold-vs-cached 4096 \
    --random-weights --config mamba2-2.7b --device cuda --max-seqs 8 \
    2>&1 | tee "$OUT/bench-serve-cache-2.7b.txt" || status=1
fi
if [[ "$what" == profile ]]; then
  step "per-kernel profile (ncu, mamba2-2.7b)"
  # Only the kernels of the timed steps (NVTX ranges bench_decode / bench_prefill / bench_op,
  # core/profile_range.h): the GEMM tuning at load launches thousands of kernels, and profiling
  # those as well took longer than a device call may run.
  for spec in "decode64:bench_decode:--no-prefill --decode-batches 64" \
              "decode1:bench_decode:--no-prefill --decode-batches 1" \
              "prefill17:bench_prefill:--no-decode --prefill-lens 17 --prefill-batches 1"; do
    name=${spec%%:*}
    rest=${spec#*:}
    range=${rest%%:*}
    # shellcheck disable=SC2086
    ncu --clock-control none --csv --print-units base --nvtx --nvtx-include "$range/" \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      build-gpu/duality bench --random-weights --config mamba2-2.7b ${rest#*:} --decode-steps 2 \
      --warmup 1 >"$OUT/ncu-$name.csv" 2>"$OUT/ncu-$name.err" || status=1
    python3 scripts/ncu_summary.py "$OUT/ncu-$name.csv" | tee "$OUT/ncu-$name.txt" || status=1
  done
  # Where a 2.7b prefill of 8k tokens goes, per kernel (docs/architecture.md, "Prefill time").
  DUALITY_GEMM_TUNE=0 ncu --clock-control none --csv --print-units base \
    --nvtx --nvtx-include "bench_prefill/" \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    build-gpu/duality bench --random-weights --config mamba2-2.7b --no-decode --prefill-lens 8192 \
    --prefill-batches 1 --warmup 0 >"$OUT/ncu-prefill8k.csv" 2>"$OUT/ncu-prefill8k.err" || status=1
  python3 scripts/ncu_summary.py "$OUT/ncu-prefill8k.csv" >"$OUT/ncu-prefill8k.txt" || status=1
  head -12 "$OUT/ncu-prefill8k.txt"
  build-gpu/duality bench --random-weights --config mamba2-2.7b --prefill-lens 17,64,256,4096 \
    --prefill-batches 1 --decode-batches 1,64 2>&1 | tee "$OUT/bench-small-2.7b.txt" || status=1
  build-gpu/duality bench --random-weights --config mamba2-2.7b --ops --decode-batches 1,64 \
    2>&1 | tee "$OUT/bench-ops-2.7b.txt" || status=1
  # The decode GEMM against cuBLASLt at 8 and 64 rows: speed of light, memory and warp stalls
  # (why it loses at 64 rows; docs/architecture.md, "Decode GEMM").
  ncu --clock-control none --kernel-name regex:'gemm_decode|gemm|Kernel' \
    --nvtx --nvtx-include "bench_op/" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats \
    build-gpu/duality bench --random-weights --config mamba2-2.7b --ops --no-prefill \
    --decode-batches 8,64 --warmup 1 --iters 2 >"$OUT/ncu-gemm-decode.txt" 2>&1 || status=1
  grep -E '^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|Stall|Warp Cycles|Registers' \
    "$OUT/ncu-gemm-decode.txt" | head -120 || true
fi
if [[ "$what" == split ]]; then
  step "split-k out_proj: op cases, model test, raw timing"
  build-gpu/tests/duality_tests --gtest_filter='*gemm_split*:*_parts*:*SplitOutProj*:*OutProjSplit*' \
    --gtest_brief=1 2>&1 | tail -5 || status=1
  build-gpu/tests/duality_tests --gtest_also_run_disabled_tests \
    --gtest_filter='GemmSplitTiming.*' 2>&1 | grep -E "m=" | tee "$OUT/split-timing.txt" || status=1
  step "split-k out_proj: tuning log and bench --ops (2.7b, 64 rows)"
  DUALITY_GEMM_TUNE_LOG=1 build-gpu/duality bench --random-weights --config mamba2-2.7b --ops \
    --no-prefill --decode-batches 64 >"$OUT/split-ops.txt" 2>&1 || status=1
  # The tuning of out_proj at 64 rows, whole and split (every candidate's time), then the rows.
  { grep -A12 'tune m=64 n=2560 k=5120' "$OUT/split-ops.txt"; grep -E '^(in|out)_proj' "$OUT/split-ops.txt"; } || true
  step "split-k out_proj: decode A/B"
  decode_ab "$OUT/split-ab.txt" 32,64 DUALITY_OUT_PROJ_SPLIT=1 DUALITY_OUT_PROJ_SPLIT=2 \
    DUALITY_OUT_PROJ_SPLIT=4
fi
if [[ "$what" == state ]]; then
  step "ssm_decode: op cases and the CUDA model tests"
  build-gpu/tests/duality_tests --gtest_filter='*ssm_decode*:CudaModel*' --gtest_brief=1 \
    2>&1 | tail -4 || status=1
  step "ssm_decode: state streaming (2.7b, 64 sequences)"
  # bulk:parts: the bulk kernel (DUALITY_SSM_DECODE_BULK) with a head's rows over `parts` blocks.
  # The copy and read-modify-write baselines are printed with the first setting only.
  : >"$OUT/state-timing.txt"
  lines="GB/s|Failure"
  for spec in 1:1 1:2 1:4 0:1; do
    echo "DUALITY_SSM_DECODE_BULK=${spec%%:*} DUALITY_SSM_DECODE_BULK_PARTS=${spec#*:}" |
      tee -a "$OUT/state-timing.txt"
    DUALITY_SSM_DECODE_BULK=${spec%%:*} DUALITY_SSM_DECODE_BULK_PARTS=${spec#*:} \
      build-gpu/tests/duality_tests --gtest_also_run_disabled_tests \
      --gtest_filter='StateStreamTiming.*' 2>&1 | grep -E "$lines" |
      tee -a "$OUT/state-timing.txt" || status=1
    lines="ssm_decode|Failure"
  done
  step "ssm_decode: decode A/B, bulk kernel in 1, 2, 4 parts, and off"
  decode_ab "$OUT/state-ab.txt" 8,32,64 \
    DUALITY_SSM_DECODE_BULK=1,DUALITY_SSM_DECODE_BULK_PARTS=1 \
    DUALITY_SSM_DECODE_BULK=1,DUALITY_SSM_DECODE_BULK_PARTS=2 \
    DUALITY_SSM_DECODE_BULK=1,DUALITY_SSM_DECODE_BULK_PARTS=4 DUALITY_SSM_DECODE_BULK=0
fi
if [[ "$what" == ab || "$what" == prefill-ab ]]; then
  [[ -n "${GPU_CHECK_AB:-}" ]] || { echo "$what: set GPU_CHECK_AB (see the header)" >&2; exit 2; }
  if [[ -n "${GPU_CHECK_FILTER:-}" ]]; then
    : >"$OUT/ab-tests.log"
    for setting in $GPU_CHECK_AB; do
      step "tests under $setting: $GPU_CHECK_FILTER"
      # shellcheck disable=SC2086  # one word per VAR=VALUE pair
      env ${setting//,/ } build-gpu/tests/duality_tests --gtest_filter="$GPU_CHECK_FILTER" \
        --gtest_brief=1 2>&1 | tee -a "$OUT/ab-tests.log" | tail -4 || status=1
    done
  fi
  if [[ "$what" == ab ]]; then
    step "decode A/B: $GPU_CHECK_AB"
    # shellcheck disable=SC2086  # one word per setting
    decode_ab "$OUT/ab.txt" "${GPU_CHECK_BATCHES:-1,8,32,64}" $GPU_CHECK_AB
  else
    step "prefill A/B: $GPU_CHECK_AB"
    # shellcheck disable=SC2086  # one word per setting
    prefill_ab "$OUT/prefill-ab.txt" "${GPU_CHECK_PREFILL_LENS:-2048,8192}" $GPU_CHECK_AB
  fi
fi
if [[ "$what" == timeline ]]; then
  step "in-step kernel times (Nsight Systems, decode)"
  # Not on the PATH of every machine: also where the CUDA toolkit and Nsight installers put it.
  nsys=$(command -v nsys || true)
  for cand in /usr/local/cuda*/bin/nsys /usr/local/cuda*/nsight-systems*/bin/nsys \
              /opt/nvidia/nsight-systems/*/bin/nsys /usr/lib/nsight-systems/bin/nsys; do
    [[ -z "$nsys" && -x "$cand" ]] && nsys=$cand
  done
  if [[ -z "$nsys" ]]; then
    echo "no nsys on this machine (PATH, /usr/local/cuda*, /opt/nvidia/nsight-systems)"
    ls -d /usr/local/cuda*/nsight* /opt/nvidia/* 2>/dev/null || true
    status=1
  else
    # shellcheck disable=SC2086  # one word per model
    for cfg in ${GPU_CHECK_MODELS:-mamba2-2.7b}; do
      # Batch-1 prefills of the lengths in GPU_CHECK_PREFILL_LENS (the NVTX range bench_prefill:
      # bench's timed passes, as many as fit 0.3 s, at most 5; each starts with a pass upload).
      lens=${GPU_CHECK_PREFILL_LENS:-}
      for len in ${lens//,/ }; do
        tag=${cfg#mamba2-}-prefill$len
        rep=/tmp/duality-timeline-$tag
        rm -f "$OUT"/timeline-"$tag"_*.csv
        NSYS_NVTX_PROFILER_REGISTER_ONLY=0 "$nsys" profile -o "$rep" --force-overwrite true \
          -t cuda,nvtx --capture-range=nvtx --nvtx-capture=bench_prefill \
          --capture-range-end=stop build-gpu/duality bench --random-weights --config "$cfg" \
          --no-decode --prefill-lens "$len" --prefill-batches 1 >"$OUT/timeline-$tag.log" 2>&1 ||
          status=1
        "$nsys" stats -q -r cuda_gpu_kern_sum,cuda_gpu_trace -f csv -o "$OUT/timeline-$tag" \
          "$rep.nsys-rep" >/dev/null 2>&1 || status=1
        passes=$(grep -c 'Host-to-Device' "$OUT/timeline-${tag}_cuda_gpu_trace.csv" || true)
        python3 scripts/timeline_summary.py "$OUT/timeline-${tag}_cuda_gpu_kern_sum.csv" \
          "$OUT/timeline-${tag}_cuda_gpu_trace.csv" "$cfg prefill b1 x $len" "${passes:-1}" |
          tee "$OUT/timeline-$tag.txt" || status=1
      done
      [[ -n "${GPU_CHECK_PREFILL_LENS:-}" && -z "${GPU_CHECK_BATCHES:-}" ]] && continue
      batches=${GPU_CHECK_BATCHES:-1,64}
      for b in ${batches//,/ }; do
        tag=${cfg#mamba2-}-b$b
        rep=/tmp/duality-timeline-$tag  # reports stay off $OUT (a few MB each)
        rm -f "$OUT"/timeline-"$tag"_*.csv
        # Capture from the range's start: NVTX names are matched only when registered otherwise.
        NSYS_NVTX_PROFILER_REGISTER_ONLY=0 "$nsys" profile -o "$rep" --force-overwrite true \
          -t cuda,nvtx --cuda-graph-trace=node --capture-range=nvtx --nvtx-capture=bench_decode \
          --capture-range-end=stop build-gpu/duality bench --random-weights --config "$cfg" \
          --no-prefill --decode-batches "$b" --decode-steps 20 >"$OUT/timeline-$tag.log" 2>&1 ||
          status=1
        "$nsys" stats -q -r cuda_gpu_kern_sum,cuda_gpu_trace -f csv -o "$OUT/timeline-$tag" \
          "$rep.nsys-rep" >/dev/null 2>&1 || status=1
        python3 scripts/timeline_summary.py "$OUT/timeline-${tag}_cuda_gpu_kern_sum.csv" \
          "$OUT/timeline-${tag}_cuda_gpu_trace.csv" "$cfg batch $b" 20 |
          tee "$OUT/timeline-$tag.txt" || status=1
      done
    done
  fi
fi
if [[ "$what" == trace ]]; then
  step "kernel timeline (CUPTI injection, $([[ -n "${GPU_CHECK_PREFILL_LENS:-}" ]] && echo prefill || echo decode))"
  lib=$PWD/build-gpu/libduality_kernel_trace.so
  trace_env=${GPU_CHECK_TRACE_ENV:-}
  if [[ ! -f "$lib" ]]; then
    echo "no $lib (built only where CMake finds CUPTI)"
    status=1
  else
    # trace_bench TAG LINE_RE ARGS...: `duality bench --random-weights ARGS` under the library,
    # its trace in /tmp/trace-TAG.csv and its log in OUT (the lines matching LINE_RE printed).
    trace_bench() {
      local tag=$1 line=$2
      shift 2
      # shellcheck disable=SC2086  # one word per VAR=VALUE pair
      env ${trace_env//,/ } CUDA_INJECTION64_PATH="$lib" DUALITY_KERNEL_TRACE="/tmp/trace-$tag.csv" \
        build-gpu/duality bench --random-weights "$@" >"$OUT/trace-$tag.log" 2>&1 || status=1
      grep -E "$line" "$OUT/trace-$tag.log" || true
    }
    # shellcheck disable=SC2086  # one word per model
    for cfg in ${GPU_CHECK_MODELS:-mamba2-2.7b mamba2-130m}; do
      lens=${GPU_CHECK_PREFILL_LENS:-}
      for len in ${lens//,/ }; do
        tag=${cfg#mamba2-}-prefill$len
        trace_bench "$tag" "^ +1 +$len " --config "$cfg" --no-decode --prefill-lens "$len" \
          --prefill-batches 1
        python3 scripts/prefill_trace_summary.py "/tmp/trace-$tag.csv" "$cfg prefill b1 x $len" |
          tee "$OUT/trace-$tag.txt" || status=1
      done
      [[ -n "$lens" ]] && continue
      batches=${GPU_CHECK_BATCHES:-1}
      for b in ${batches//,/ }; do
        tag=${cfg#mamba2-}-b$b
        trace_bench "$tag" "^ +$b " --config "$cfg" --no-prefill --decode-batches "$b" \
          --decode-steps 32
        python3 scripts/kernel_trace_summary.py "/tmp/trace-$tag.csv" "$cfg batch $b" 16 |
          tee "$OUT/trace-$tag.txt" || status=1
      done
    done
  fi
fi
step "done (status $status)"
exit $status
