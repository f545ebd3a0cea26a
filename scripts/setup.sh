#!/usr/bin/env bash
# Installs what duality needs to build and run on Debian 12 (bookworm). Idempotent: packages
# already present are not reinstalled. Needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libpcre2-dev libutf8proc-dev
  libopenblas-openmp-dev libzip-dev libgtest-dev libbenchmark-dev
)
if [[ "${DUALITY_SETUP_TEST:-0}" == 1 ]]; then
  # Sanitizer and fuzzer builds use clang; the tokenizer comparison uses Python.
  packages+=(clang libclang-rt-14-dev libomp-dev python3 python3-pip)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ "${DUALITY_SETUP_TEST:-0}" == 1 ]]; then
  # Test-only Python packages (reference tokenizer and chat-template renderer for the
  # comparison tests).
  python3 -c "import tokenizers, numpy, jinja2" 2>/dev/null ||
    python3 -m pip install -q tokenizers numpy jinja2 ||
    python3 -m pip install -q --break-system-packages tokenizers numpy jinja2
fi
