# Sourced by the GPU scripts (gpu-check.sh, gpu-ssd-fused.sh, gpu-decode-stack.sh): on a GPU machine without Debian's
# -dev packages (CUDA, CMake and a compiler but no package registry), unpacks the packages that
# scripts/fetch-gpu-deps.sh put in .deps/ into a private prefix and points the build at them.

# step NAME...: a section header with the seconds since the script started.
step() { printf '\n==== %s (%ss)\n' "$*" "$SECONDS"; }

# GPU_PACK=1: when the script exits, every file under $OUT but earlier archives goes into one
# archive, $OUT/logs-PID.tgz (the device tool returns at most 8 files from its output folder, and
# rev-ab alone writes more); read it with tar -xzf. gpu-ssd-fused.sh with several sections runs
# itself once per section, so such a call leaves one archive a section.
pack_out() {
  local tgz
  tgz=$(mktemp /tmp/duality-logs.XXXXXX) || return
  (cd "$OUT" && tar -czf "$tgz" --exclude='./logs-*.tgz' . &&
    find . -mindepth 1 ! -name 'logs-*.tgz' -delete && mv "$tgz" "logs-$$.tgz") ||
    echo "GPU_PACK: could not pack $OUT" >&2
}
if [[ "${GPU_PACK:-0}" == 1 && -n "${OUT:-}" ]]; then
  trap pack_out EXIT
fi

if ! command -v pkg-config >/dev/null || ! pkg-config --exists libzip 2>/dev/null; then
  [[ -d .deps ]] || { echo "no -dev packages here: run scripts/fetch-gpu-deps.sh and carry .deps" >&2; exit 1; }
  prefix=/tmp/duality-deps
  mkdir -p "$prefix"
  for f in .deps/*.deb; do dpkg-deb -x "$f" "$prefix"; done
  arch=x86_64-linux-gnu
  export PATH="$prefix/usr/bin:$PATH"
  export PKG_CONFIG_SYSROOT_DIR="$prefix"
  export PKG_CONFIG_PATH="$prefix/usr/lib/$arch/openblas-openmp/pkgconfig:$prefix/usr/lib/$arch/pkgconfig:$prefix/usr/share/pkgconfig"
  export PKG_CONFIG_LIBDIR="$PKG_CONFIG_PATH"
  export LD_LIBRARY_PATH="$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openblas-openmp:${LD_LIBRARY_PATH:-}"
  export CMAKE_PREFIX_PATH="$prefix/usr"
fi

# sm90a_build SRC BUILD LOG TARGET...: a Release, sm_90a-only build of the tree SRC in BUILD with
# every core (both steps' output to LOG); non-zero when either step fails.
sm90a_build() {
  local src=$1 build=$2 log=$3
  shift 3
  { cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDUALITY_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DDUALITY_WERROR=OFF &&
    ninja -C "$build" -j "$(nproc)" "$@"; } >"$log" 2>&1
}

# gpu_build_sm90a OUT TARGET...: the build the one-call GPU scripts (gpu-ssd-fused.sh,
# gpu-decode-stack.sh) share: the GPU's name to OUT/gpu.txt, then build-gpu (sm90a_build) of the
# given targets, its log in OUT; exits the script on failure.
gpu_build_sm90a() {
  local out=$1
  shift
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$out/gpu.txt"
  sm90a_build . build-gpu "$out/build.log" "$@" ||
    { grep -E "error|Error" -A3 "$out/build.log" | head -60; tail -5 "$out/build.log"; exit 1; }
}
