#!/usr/bin/env bash
# Regenerate every stored result of the kit's model in dependency order, then re-run the chapters.
#
#   tools/regenerate_results.sh              # after a change of what a stored result means
#   tools/regenerate_results.sh --refit-lens # after the model itself changed (its tuned lens first)
#
# Each step is the kit's own command (README, "Chapters"); the script stops at the first that fails
# and prints each step's wall time. About 1.5 hours on 2 idle CPU cores with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
refit=0
for arg in "$@"; do
  case "$arg" in
    --refit-lens) refit=1 ;;
    *) echo "unknown option $arg (known: --refit-lens)" >&2; exit 2 ;;
  esac
done
step() {
  echo "== $*"
  local start=$SECONDS
  "$@"
  echo "   done in $((SECONDS - start)) s"
}
if [ "$refit" = 1 ]; then
  # the tuned lens is fit on the model it reads (F3 uses it only when its fingerprint matches)
  step "$PY" -m flowkit.analysis.tuned_lens fit --model flowkit-smol-video --seed 4242 --per-task 24 --rank 32 \
    --steps 60 --batch 24 --out data/models/flowkit-smol-video/tuned_lens.safetensors --overwrite
fi
step "$PY" -m flowkit fidelity
step "$PY" -m flowkit fidelity --quantization-only
step "$PY" -m flowkit fidelity --card-only
step "$PY" -m flowkit pathway-study --loss-margin 2 --choose-rule
step "$PY" notebooks/run_chapters.py
