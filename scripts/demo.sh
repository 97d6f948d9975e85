#!/usr/bin/env bash
# Set up, then run the main job on its embedded defaults: seven emulated receivers, 10 s of IQ.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/heimdall-lab demo "$@"
