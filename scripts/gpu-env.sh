# Sourced by the GPU scripts (gpu-check.sh, gpu-ssd-fused.sh, gpu-decode-stack.sh): on a GPU machine without Debian's
# -dev packages (CUDA, CMake and a compiler but no package registry), unpacks the packages that
# scripts/fetch-gpu-deps.sh put in .deps/ into a private prefix and points the build at them.

# step NAME...: a section header with the seconds since the script started.
step() { printf '\n==== %s (%ss)\n' "$*" "$SECONDS"; }

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

# gpu_build_sm90a OUT TARGET...: the build the one-call GPU scripts (gpu-ssd-fused.sh,
# gpu-decode-stack.sh) share: the GPU's name to OUT/gpu.txt, then build-gpu (Release, sm_90a only,
# every core) of the given targets, logs in OUT; exits the script on failure.
gpu_build_sm90a() {
  local out=$1
  shift
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$out/gpu.txt"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDUALITY_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DDUALITY_WERROR=OFF >"$out/cmake.log" 2>&1 ||
    { tail -40 "$out/cmake.log"; exit 1; }
  ninja -C build-gpu -j "$(nproc)" "$@" >"$out/build.log" 2>&1 ||
    { grep -E "error|Error" -A3 "$out/build.log" | head -60; exit 1; }
}
