#!/usr/bin/env bash
# Run flowkit's whole test suite (unit tests and the chapters under nbval).
# Sets up ./.venv first if needed (same environment as ./setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --no-lab
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
