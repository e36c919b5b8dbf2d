#!/usr/bin/env bash
# Install everything ttsops needs on a fresh Debian with Python 3.11 (run as root, or with sudo).
# Idempotent: a second run only checks. Used by scripts/demo.sh and scripts/test.sh.
#
# PyTorch: the CPU build unless told otherwise. A torch wheel that pip's own configuration already finds
# (a local wheel, a mirror) is used as it is; otherwise it comes from PyTorch's CPU index (~200 MB), not
# PyPI's default CUDA build (several GB). TTSOPS_TORCH=cu126 (or cu128, ...) installs that CUDA build from
# PyTorch's index instead; TTSOPS_TORCH_INDEX=URL names another index. `scripts/setup.sh --torch-source`
# only prints where torch would come from.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(flite espeak-ng sox pocketsphinx-testdata git)
[ "${TTSOPS_WITH_CHROMIUM:-1}" = 1 ] && APT_PACKAGES+=(chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
TORCH_VARIANT=${TTSOPS_TORCH:-cpu}
TORCH_INDEX=${TTSOPS_TORCH_INDEX:-https://download.pytorch.org/whl/$TORCH_VARIANT}
TORCH_VERSION=$(sed -n 's/^torch==\([0-9.]*\)+.*$/\1/p' constraints.txt)
TORCH_REQ="torch==$TORCH_VERSION+$TORCH_VARIANT"
torch_source() {  # prints "configured" when pip's own configuration finds the build, else the index to add
  if .venv/bin/python -m pip install -q --dry-run --ignore-installed --no-deps "$TORCH_REQ" >/dev/null 2>&1; then
    echo configured
  else
    echo "$TORCH_INDEX"
  fi
}
if [ "${1:-}" = "--torch-source" ]; then echo "$TORCH_REQ $(torch_source)"; exit 0; fi
# the pinned constraints with the chosen torch build
sed "s/^torch==.*$/$TORCH_REQ/" constraints.txt > .venv/constraints.txt
stamp=.venv/.ttsops-installed
want=$(cat pyproject.toml .venv/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  src=$(torch_source)
  index_args=()
  if [ "$src" = configured ]; then
    echo "[setup] pip install ($TORCH_REQ as pip's configuration finds it; the rest pinned by constraints.txt)"
  else
    echo "[setup] pip install ($TORCH_REQ from $src; the rest from PyPI, pinned by constraints.txt; a few minutes)"
    index_args=(--extra-index-url "$src")
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${index_args[@]}" -c .venv/constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "[setup] ok: $(.venv/bin/python -c 'import torch, mlflow, optuna; print("torch", torch.__version__, "mlflow", mlflow.__version__, "optuna", optuna.__version__)')"
