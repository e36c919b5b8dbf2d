"""Intelligibility against CPU-minutes of training: the WER curve of a recipe, from one train.py run.

    .venv/bin/python benchmarks/intelligibility_curve.py DATASET OUT [--minutes 90] [--hparams "k=v,..."]
    .venv/bin/python benchmarks/intelligibility_curve.py --plot-only OUT   # redraw from OUT's MLflow store

It runs ``ttsops train`` with ``configs/demo.yaml`` (the demo's recipe: phonemes, frame dropout 0.3,
r = 3) on DATASET for ``--minutes`` of wall time, with the held-out ASR check every
``--check-every`` validations (10 sentences per list), then reads ``asr_wer`` (in-domain),
``asr_wer_out_of_domain``, ``speaking_rate_ratio`` and ``cpu_minutes`` back from the run's MLflow
store and writes ``OUT/intelligibility_curve.png`` and ``.json``. ``cpu_minutes`` is train.py's own
CPU time (validation and the ASR checks included), so the x axis does not depend on how busy the
machine was. Make DATASET with ``ttsops demo`` (its ``dataset/``) or ``ttsops data synth-corpus``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERIES = ("asr_wer", "asr_wer_out_of_domain", "speaking_rate_ratio", "cpu_minutes", "val_loss")


def train(dataset: Path, out: Path, minutes: float, hparams: str, check_every: int) -> None:
    hp = f"epochs=100000,val_every_epochs=2,intelligibility_every={check_every},intelligibility_sentences=10"
    cmd = [sys.executable, "-m", "ttsops.train", "-o", str(out), "--dataset", str(dataset),
           "--config", str(REPO / "configs" / "demo.yaml"), "--hparams", f"{hp},{hparams}".rstrip(","),
           "resources.checkpointing.save_frequency_steps=300", "resources.checkpointing.keep_n_checkpoints=100"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        proc.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)  # SIGINT: train.py saves and exits 0
        proc.wait()


def read_curve(out: Path) -> list[dict[str, float]]:
    from mlflow import MlflowClient

    state = json.loads((out / "train_state.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    hist = {k: {m.step: m.value for m in client.get_metric_history(state["mlflow_run_id"], k)} for k in SERIES}
    return [{"step": s, **{k: hist[k].get(s) for k in SERIES}} for s in sorted(hist["asr_wer"])]


def plot(rows: list[dict[str, float]], path: Path, title: str) -> None:
    from ttsops.infra.plotting import figure_png, pyplot

    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    x = [r["cpu_minutes"] for r in rows]
    ax.plot(x, [r["asr_wer"] for r in rows], marker="o", label="in-domain")
    ax.plot(x, [r["asr_wer_out_of_domain"] for r in rows], marker="s", label="out-of-domain (Harvard)")
    ax.axhline(0.13, color="grey", ls=":", lw=1, label="copy-synthesis ceiling, in-domain (0.13)")
    ax.axhline(0.35, color="tab:red", ls="--", lw=0.8, label="target after the demo (0.35)")
    ax.set(xlabel="CPU-minutes of train.py", ylabel="ASR word error rate (pocketsphinx)", ylim=(0, 1.05),
           title=title)
    ax.legend(fontsize=8)
    path.write_bytes(figure_png(fig))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="?", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=90.0, help="wall-clock minutes of training")
    ap.add_argument("--hparams", default="", help="extra train.py hparams (a lever to measure)")
    ap.add_argument("--check-every", type=int, default=15, help="validations between ASR checks (2 epochs each)")
    ap.add_argument("--plot-only", action="store_true", help="read OUT's run and redraw, no training")
    args = ap.parse_args()
    if not args.plot_only:
        if args.dataset is None:
            ap.error("DATASET is required unless --plot-only")
        train(args.dataset, args.out, args.minutes, args.hparams, args.check_every)
    rows = read_curve(args.out)
    (args.out / "intelligibility_curve.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "intelligibility_curve.png", f"demo recipe {args.hparams}".strip())
    print(f"{'cpu min':>8} {'step':>6} {'WER in':>7} {'WER ood':>8} {'rate':>5} {'val_loss':>8}")
    for r in rows:
        print(f"{r['cpu_minutes'] or 0:8.1f} {r['step']:6d} {r['asr_wer']:7.3f} {r['asr_wer_out_of_domain'] or 0:8.3f} "
              f"{r['speaking_rate_ratio'] or 0:5.2f} {r['val_loss'] or 0:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
