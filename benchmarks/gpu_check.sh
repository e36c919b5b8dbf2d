#!/usr/bin/env bash
# CUDA checks for train.py, for a machine with a GPU (CI has none): mixed precision (autocast) training
# and resume, DDP over NCCL under torchrun (one process per GPU; a group of one on a one-GPU machine),
# and the training-throughput benchmark in fp32 and under autocast. Prints PASS/FAIL per check and
# exits non-zero if any failed. Logs go to OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR DATASET [BENCH_WORKDIR] [SENTENCES]
#
# DATASET is an LJSpeech-layout corpus (`ttsops data synth-corpus DIR --n 48`); BENCH_WORKDIR and
# SENTENCES are train_throughput.py's --workdir and --sentences (defaults: its own).
# TTSOPS_CHECK_DEVICE=cpu dry-runs the same checks on the CPU (gloo instead of NCCL); CHECKS picks
# some of "amp fp32 ddp throughput" (default: all).
set -uo pipefail
usage="usage: gpu_check.sh OUT_DIR DATASET [BENCH_WORKDIR] [SENTENCES]"
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # the caller's paths, before the cd
OUT=$(abs "${1:?$usage}")
DATA=$(abs "${2:?$usage}")
BENCH=(); [ -n "${3:-}" ] && BENCH+=(--workdir "$(abs "$3")"); [ -n "${4:-}" ] && BENCH+=(--sentences "$(abs "$4")")
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
TINY="encoder_embedding_dim=64,attention_rnn_dim=128,decoder_rnn_dim=128,prenet_dim=64,postnet_embedding_dim=64"
TINY+=",n_frames_per_step=3,max_decoder_steps=150,val_fraction=0.15,n_audio_metric_clips=1,batch_size=8,log_every_steps=1"
DEV=${TTSOPS_CHECK_DEVICE:-cuda}
if [ "$DEV" = cpu ]; then NGPU=1; BACKEND=gloo; else NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())"); BACKEND=nccl; fi
results=()
check() { local name=$1; shift; if "$@"; then results+=("PASS  $name"); else results+=("FAIL  $name"); fi; }
state() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1/train_state.json" "$2"; }

amp_train() {  # 2 epochs under autocast, then resumed to 3: the step count goes on, the loss stays finite
  "$PY" -m ttsops.train -o "$OUT/amp" --dataset "$DATA" --hparams "$TINY,epochs=2" resources.device=$DEV \
    resources.mixed_precision=true resources.num_threads=2 >"$OUT/amp.log" 2>&1 || return 1
  [ "$DEV" = cpu ] || grep -Eq "autocast (bfloat16|float16)" "$OUT/amp.log" || { echo "amp: autocast not reported"; return 1; }
  local s1; s1=$(state "$OUT/amp" step)
  "$PY" -m ttsops.train -o "$OUT/amp" -c "$(state "$OUT/amp" last_checkpoint)" --dataset "$DATA" --hparams "$TINY,epochs=3" resources.device=$DEV \
    resources.mixed_precision=true resources.num_threads=2 >"$OUT/amp_resume.log" 2>&1 || return 1
  grep -q "resumed" "$OUT/amp_resume.log" || { echo "amp: no resume"; return 1; }
  local s2 best; s2=$(state "$OUT/amp" step); best=$(state "$OUT/amp" best_val_loss)
  echo "amp: step $s1 -> $s2 after resume, best val_loss $best"
  [ "$s2" -gt "$s1" ] && "$PY" -c "import math,sys; sys.exit(not math.isfinite(float(sys.argv[1])))" "$best"
}

fp32_train() {
  "$PY" -m ttsops.train -o "$OUT/fp32" --dataset "$DATA" --hparams "$TINY,epochs=1" resources.device=$DEV \
    resources.mixed_precision=false resources.num_threads=2 >"$OUT/fp32.log" 2>&1 && grep -q "fp32" "$OUT/fp32.log"
}

ddp_train() {  # torchrun, one process per GPU, NCCL; the replicas' weights must match at the end
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m ttsops.train -o "$OUT/ddp" \
    --dataset "$DATA" --hparams "$TINY,epochs=2" resources.device=$DEV resources.num_threads=2 >"$OUT/ddp.log" 2>&1 || return 1
  grep -q "over $BACKEND" "$OUT/ddp.log" && grep -q "weights identical on all $NGPU ranks" "$OUT/ddp.log"
}

throughput() {
  "$PY" benchmarks/train_throughput.py --device "$DEV" --sizes demo,small,spec --steps 10 "${BENCH[@]}" "$@" \
    2>&1 | tee -a "$OUT/throughput.log"
  [ "${PIPESTATUS[0]}" -eq 0 ]
}

nvidia-smi -L 2>&1 | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())" \
  | tee -a "$OUT/gpu.txt"
CHECKS=" ${CHECKS:-amp fp32 ddp throughput} "
for c in $CHECKS; do
  case $c in amp|fp32|ddp|throughput) ;; *) echo "CHECKS: unknown check '$c' (amp fp32 ddp throughput)"; exit 2 ;; esac
done
[[ $CHECKS == *" amp "* ]] && check "train.py on $DEV, mixed precision on, resumed" amp_train
[[ $CHECKS == *" fp32 "* ]] && check "train.py on $DEV, fp32" fp32_train
[[ $CHECKS == *" ddp "* ]] && check "torchrun x$NGPU, DDP over $BACKEND" ddp_train
[[ $CHECKS == *" throughput "* ]] && check "throughput fp32" throughput && check "throughput autocast" throughput --amp
[ ${#results[@]} -gt 0 ] || { echo "no check ran"; exit 2; }
printf '%s\n' "${results[@]}" | tee "$OUT/summary.txt"
! grep -q FAIL "$OUT/summary.txt"
