#!/usr/bin/env bash
# Builds duality (Release) and runs the main job: text generation with the bundled model.
# Extra arguments go to `duality generate`, e.g. scripts/run.sh --prompt "The little dog" -n 80
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build duality
if [[ $# -eq 0 ]]; then set -- --prompt "Once upon a time" -n 64; fi
exec build/duality generate "$@"
