#!/usr/bin/env bash
# Run flowkit's whole test suite (unit tests and the chapters under nbval).
# Sets up ./.venv first if needed (same environment as ./setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --no-lab
# The browser test drives headless Chromium; install it where we can, else it is skipped with a note.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && [ "${FLOWKIT_NO_APT:-0}" != "1" ]; then
    echo "==> installing chromium and chromium-driver for the browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null) || echo "warning: could not install chromium; the browser test will be skipped"
  else
    echo "note: the browser test needs chromium and chromedriver (Debian/Ubuntu: sudo apt-get install chromium chromium-driver); it will be skipped"
  fi
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
