"""End to end: training steps per minute of `ttsops train` against Coqui TTS 0.28's Trainer, same clips.

    .venv/bin/python benchmarks/end_to_end.py [--corpus DIR | --clips 300] [--minutes 6] [--rounds 3]
        [--threads 1] [--out DIR] [--ours-hparams "k=v,..."] [--json out.json]

Each round starts both trainers at the same moment, one beside the other (``--threads`` torch threads
each: on the 2-core machine one each), on the same LJSpeech-layout corpus, lets them train for
``--minutes`` of wall time from launch (process start, imports, data loading, evaluation, logging and
checkpointing included), then sends both SIGINT. Both save a checkpoint named after their global step
on SIGINT (ours ``checkpoint_<step>.pt`` + ``train_state.json``, Coqui's ``checkpoint_<step>.pth``); the
steps trained divided by the minutes is the figure, and the ratio of the two per round is the claim.

- ours: ``python -m ttsops.train`` with ``configs/demo.yaml``, i.e. its normal validation cadence
  (teacher-forced validation, alignment and free-running distance every epoch, audio metrics and
  sample images every 4th validation), with the model sizes of Coqui's recipe by default
  (``--ours-hparams``: the small sizes, r=2, characters, batch 16) so the step does the same work;
- Coqui: ``../shared/bench/coqui/coqui_tacotron2_recipe.py`` (small sizes, r=2, batch 16, eval on 10%
  of the clips every epoch plus two free-running test sentences with Griffin-Lim), in the venv that
  ``coqui_env.sh`` builds.

Our mel cache is built once before the first round (a one-step run), as a user's first run builds it
once for every later run and generation; Coqui computes its features on the fly in every epoch, which
is its design. Both write TensorBoard logs; ours also logs to MLflow (embedded SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COQUI_DIR = REPO.parent / "shared" / "bench" / "coqui"
SMALL = ("encoder_embedding_dim=128,attention_rnn_dim=256,decoder_rnn_dim=256,prenet_dim=128,attention_dim=64,"
         "postnet_embedding_dim=128,n_frames_per_step=2,batch_size=16,text_frontend=characters,drop_frame_rate=0.0,"
         "epochs=100000")


def corpus(args: argparse.Namespace, out: Path) -> Path:
    if args.corpus:
        return Path(args.corpus)
    from ttsops.data.corpus import synth_corpus

    path = out / "corpus"
    if not (path / "metadata.csv").is_file():
        synth_corpus(path, n=args.clips, seed=0, progress=True, workers=2)
    return path


def ours_cmd(data: Path, out: Path, hparams: str, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "ttsops.train", "-o", str(out), "--dataset", str(data), "--config",
            str(REPO / "configs" / "demo.yaml"), "--hparams", hparams, *(extra or [])]


def coqui_cmd(data: Path, out: Path) -> list[str]:
    py = Path(os.environ.get("COQUI_VENV", "/tmp/coqui-venv")) / "bin" / "python"
    return [str(py), str(COQUI_DIR / "coqui_tacotron2_recipe.py"), str(data), str(out)]


def ours_steps(out: Path) -> int:
    state = json.loads((out / "train_state.json").read_text())
    return int(state["step"])


def coqui_steps(out: Path) -> int:
    steps = [int(m.group(1)) for p in out.rglob("checkpoint_*.pth") if (m := re.match(r"checkpoint_(\d+)\.pth", p.name))]
    if not steps:
        raise SystemExit(f"Coqui wrote no checkpoint under {out} (see {out}/log.txt)")
    return max(steps)


def one_round(data: Path, out: Path, minutes: float, threads: int, hparams: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_THREADS": str(threads),
           "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    runs = {"ours": (ours_cmd(data, out / "ours", hparams, [f"resources.num_threads={threads}"]), REPO),
            "coqui": (coqui_cmd(data, out / "coqui"), COQUI_DIR)}
    procs = {}
    for who, (cmd, cwd) in runs.items():
        (out / who).mkdir(parents=True, exist_ok=True)
        log = open(out / who / "log.txt", "w")
        # SIGINT at its default in the child: a benchmark started as a background job (`cmd &`, nohup)
        # inherits it ignored, and Coqui's Trainer then never saves its step count (found 2026-12-05)
        procs[who] = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + minutes * 60
    while time.time() < deadline:
        for who, p in procs.items():
            if p.poll() is not None:
                for q in procs.values():
                    q.kill()
                tail = (out / who / "log.txt").read_text()[-2000:]
                raise SystemExit(f"{who} exited early ({p.returncode}):\n{tail}")
        time.sleep(1.0)
    cpu = {}
    for who, p in procs.items():
        cpu[who] = _cpu_seconds(p.pid)
        p.send_signal(signal.SIGINT)
    for p in procs.values():
        try:
            p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
    steps = {"ours": ours_steps(out / "ours"), "coqui": coqui_steps(out / "coqui")}
    return {"minutes": minutes, "steps": steps, "cpu_s": cpu,
            "steps_per_min": {k: v / minutes for k, v in steps.items()},
            "ratio": (steps["ours"] / steps["coqui"]) if steps["coqui"] else float("inf")}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of the process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="LJSpeech-layout corpus (default: synthesise the demo corpus)")
    ap.add_argument("--clips", type=int, default=300, help="clips to synthesise when --corpus is not given")
    ap.add_argument("--minutes", type=float, default=6.0, help="wall minutes per trainer per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ours-hparams", default=SMALL)
    ap.add_argument("--out", help="work directory (default: a temporary one)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    subprocess.run(["bash", str(COQUI_DIR / "coqui_env.sh")], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="ttsops-e2e-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        data = corpus(args, out)
        subprocess.run(ours_cmd(data, out / "cache_warmup", args.ours_hparams, ["--max_steps", "1"]), check=True,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print(f"end to end, {args.minutes:g} min per round, {args.threads} thread(s) each, corpus {data}, "
              f"load average {os.getloadavg()[0]:.2f} at start")
        print(f"{'round':>5} {'ours steps':>10} {'coqui steps':>11} {'ours/min':>9} {'coqui/min':>9} {'ratio':>6}")
        rounds = []
        for k in range(args.rounds):
            r = one_round(data, out / f"round{k + 1}", args.minutes, args.threads, args.ours_hparams)
            rounds.append(r)
            s, spm = r["steps"], r["steps_per_min"]
            print(f"{k + 1:>5} {s['ours']:>10} {s['coqui']:>11} {spm['ours']:>9.1f} {spm['coqui']:>9.1f} "
                  f"{r['ratio']:>5.2f}x", flush=True)
        median = statistics.median(r["ratio"] for r in rounds)
        print(f"median ratio (ours / Coqui steps per minute): {median:.2f}x; load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "median_ratio": median}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
