#!/usr/bin/env bash
# The main job (README): install what is needed, then run the end-to-end demo on a synthesised corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 WANDB_MODE=offline RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/ttsops demo "$@"
