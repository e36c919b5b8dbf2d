#!/usr/bin/env bash
# The test command (README, .ci/run): install what is needed, run the static checks (ruff; mypy on
# ttsops/, strict on the pure packages), then every test, heavy ones included. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 WANDB_MODE=offline RAY_USAGE_STATS_ENABLED=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "[test] ruff check"
.venv/bin/ruff check .
echo "[test] mypy (pyproject.toml [tool.mypy])"
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
