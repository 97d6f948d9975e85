#!/usr/bin/env bash
# Set up (the package, its test tools, a headless Chromium), then run the whole test suite:
# lint, format check, pytest with coverage (>= 80 %), JupyterLab in the browser included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh
.venv/bin/ruff check heimdall_lab tests benchmarks notebooks
.venv/bin/ruff format --check heimdall_lab tests benchmarks notebooks
.venv/bin/lint-imports
exec .venv/bin/python -m pytest --cov=heimdall_lab --cov-report=term "$@"
