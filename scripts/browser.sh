#!/usr/bin/env bash
# Make sure a headless Chromium is there for the browser tests (tests/test_browser.py).
# Debian's package, installed as root with apt when missing; Playwright drives it through
# its executable path. Without one the browser tests skip, saying why.
set -uo pipefail
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ -n "${HEIMDALL_CHROMIUM:-}" ] && [ -x "${HEIMDALL_CHROMIUM}" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: no Chromium, and no root apt-get to install it; the browser tests will skip" >&2
  exit 0
fi
echo "browser.sh: installing Chromium (apt-get install chromium) for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >/tmp/heimdall-chromium-install.log 2>&1; then
  echo "browser.sh: installing Chromium failed (see /tmp/heimdall-chromium-install.log); the browser tests will skip" >&2
fi
exit 0
