#!/usr/bin/env bash
# Downloads (here, where Debian's archive is reachable) the Debian packages that
# scripts/gpu-check.sh unpacks on a GPU machine that has CUDA, CMake and a compiler but no
# package registry. They land in .deps/ (git-ignored; carry it to the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
apt-get download \
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libcpp-httplib0.11 libbrotli1 libgtest-dev \
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  libutf8proc-dev libutf8proc2 libzip-dev libzip4 zlib1g-dev libbz2-dev liblzma-dev \
  libzstd-dev libssl-dev libbrotli-dev \
  libopenblas-openmp-dev libopenblas0-openmp libopenblas-dev libgomp1 \
  pkgconf pkgconf-bin libpkgconf3
echo "fetch-gpu-deps: $(ls | wc -l) packages in .deps/"
