#!/usr/bin/env bash
# Builds and runs every test: the release build (warnings as errors, CUDA compiled when nvcc is
# present), the same tests under AddressSanitizer + UndefinedBehaviorSanitizer, and a short
# libFuzzer run of each parser. CI runs exactly this (.ci/run).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 30; 0 skips fuzzing)
#   JOBS=N           parallel build jobs and fuzz targets (default: all cores)
#   DUALITY_TEST_WHOLE=1  also the whole-file perplexity check (perplexity_whole_files_match_train_log)
set -euo pipefail
cd "$(dirname "$0")/.."
DUALITY_SETUP_TEST=1 scripts/setup.sh

JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
step() { printf '\n==== %s (%ss)\n' "$*" "$SECONDS"; }

step "release build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDUALITY_WERROR=ON >/dev/null
ninja -C build -j "$JOBS"
step "release tests"
log=$(mktemp)
# The whole-file perplexity check (label "whole", ~10 minutes of 2 cores) only when asked; CI runs
# the same recipe on the files' first 48 windows (tests/CMakeLists.txt).
whole=(-LE whole)
[[ "${DUALITY_TEST_WHOLE:-0}" == 1 ]] && whole=()
ctest --test-dir build --output-on-failure -j "$JOBS" "${whole[@]}" | tee "$log"
passed=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log")
# The measured numbers behind the slow checks (ctest keeps passing tests' output in its log).
grep -h -E "apart\)|MB/s" build/Testing/Temporary/LastTest.log || true

step "sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUALITY_SANITIZE=ON \
  -DDUALITY_CUDA=OFF -DDUALITY_WERROR=ON >/dev/null
ninja -C build-asan -j "$JOBS"
step "sanitizer tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" -LE slow | tee "$log"
passed=$((passed + $(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log")))
rm -f "$log"

if [[ "$FUZZ_SECONDS" != 0 ]]; then
  step "fuzz build (clang, libFuzzer)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDUALITY_FUZZ=ON -DDUALITY_SANITIZE=ON -DDUALITY_BUILD_TESTS=OFF -DDUALITY_CUDA=OFF >/dev/null
  targets=(fuzz_safetensors fuzz_torch_pickle fuzz_config fuzz_chat_template fuzz_tokenizer
    fuzz_openai_request)
  ninja -C build-fuzz -j "$JOBS" "${targets[@]}"
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  # fuzz_one TARGET: its seeds into $corpus/TARGET, then FUZZ_SECONDS of libFuzzer, its output in
  # $corpus/TARGET.log; non-zero when it found something.
  fuzz_one() {
    local target=$1 i
    local seeds=()
    mkdir -p "$corpus/$target"
    case $target in
      fuzz_safetensors) seeds=(tests/golden/hf_tiny_f32/model.safetensors tests/golden/ssm_safetensors_f16/model.safetensors) ;;
      fuzz_torch_pickle)  # the archive, and its data.pkl alone (the unpickler's own input)
        python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); n = [x for x in z.namelist() if x.endswith("data.pkl")][0]; open(sys.argv[2], "wb").write(z.read(n))' \
          tests/golden/ssm_bin_bf16_groups/pytorch_model.bin "$corpus/data.pkl"
        seeds=(tests/golden/ssm_bin_f32/pytorch_model.bin "$corpus/data.pkl") ;;
      fuzz_config) seeds=(tests/golden/*/config.json) ;;
      fuzz_chat_template)  # real templates, and the one exercising the whole subset
        seeds=(tests/server/templates/{chatml,llama2,qwen2_5,zephyr,features}.jinja) ;;
      fuzz_tokenizer)  # the bundled tokenizer cut to its first 300 ids and their merges (2.5 MB
        # whole is too large to mutate usefully)
        python3 - models/mamba2-gutenberg-17m/tokenizer.json "$corpus/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
m = t["model"]
keep = {k: v for k, v in m["vocab"].items() if v < 300}
pairs = [x.split(" ", 1) if isinstance(x, str) else x for x in m["merges"]]
m["merges"] = [f"{a} {b}" for a, b in pairs if a in keep and b in keep and a + b in keep]
m["vocab"] = keep
t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < 300]
json.dump(t, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
        seeds=("$corpus/tokenizer.json") ;;
      fuzz_openai_request)  # one body per endpoint (the first byte picks it), every field used
        printf '\000%s' '{"prompt": ["Once upon", [510, 1263]], "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "stop": ["a"], "n": 2, "seed": 1, "logprobs": 2, "echo": true, "logit_bias": {"510": -100}, "stop_token_ids": [187], "response_format": {"type": "text"}, "min_tokens": 0, "tool_choice": "none", "stream": true, "stream_options": {"include_usage": true}}' >"$corpus/c"
        printf '\001%s' '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}], "max_completion_tokens": 4, "logprobs": true, "top_logprobs": 3, "presence_penalty": 1}' >"$corpus/ch"
        printf '\002%s' '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}], "add_generation_prompt": false, "top_p": 0.5}' >"$corpus/ml"
        printf '\003%s' '{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": false}' >"$corpus/t"
        printf '\004%s' '{"tokens": [510, 1263, 50276]}' >"$corpus/d"
        # A past find, replayed every run: a positive top_p that is 0 as a float.
        printf '\000%s' '{"prompt": "a", "top_p": 1e-300}' >"$corpus/tp"
        seeds=("$corpus/c" "$corpus/ch" "$corpus/ml" "$corpus/t" "$corpus/d" "$corpus/tp") ;;
    esac
    for i in "${!seeds[@]}"; do cp "${seeds[$i]}" "$corpus/$target/seed$i"; done
    # A find ends the run with libFuzzer's report (the stack, and the input in base64 where it is
    # short) and the input saved under build-fuzz/ as crash-*, leak-* or timeout-*.
    "build-fuzz/tests/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -max_len=400000 \
      -artifact_prefix=build-fuzz/ -print_final_stats=1 "$corpus/$target" >"$corpus/$target.log" 2>&1
  }
  # JOBS targets at a time (each fuzzer is one process on one core), their reports in order.
  for ((first = 0; first < ${#targets[@]}; first += JOBS)); do
    batch=("${targets[@]:first:JOBS}")
    step "fuzz ${batch[*]} for ${FUZZ_SECONDS}s"
    pids=()
    for target in "${batch[@]}"; do
      fuzz_one "$target" &
      pids+=($!)
    done
    failed=()
    for i in "${!batch[@]}"; do
      if wait "${pids[$i]}"; then
        tail -n 4 "$corpus/${batch[$i]}.log"
      else
        failed+=("${batch[$i]}")
      fi
    done
    for target in "${failed[@]}"; do
      tail -n 60 "$corpus/$target.log"
      echo "fuzz $target failed: reproduce with build-fuzz/tests/fuzz/$target build-fuzz/<the input above>" >&2
    done
    ((${#failed[@]} == 0)) || exit 1
  done
fi
step "all tests passed"
echo "tests: $passed passed, 0 failed"
