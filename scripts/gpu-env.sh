# Sourced by the GPU scripts (gpu-check.sh, gpu-ssd-fused.sh): on a GPU machine without Debian's
# -dev packages (CUDA, CMake and a compiler but no package registry), unpacks the packages that
# scripts/fetch-gpu-deps.sh put in .deps/ into a private prefix and points the build at them.
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
