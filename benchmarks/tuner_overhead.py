"""How much the Smart Tuner costs on top of training, and how fast it acts on a metric.

    .venv/bin/python benchmarks/tuner_overhead.py [--trainer foreign|ttsops] [--generations 6]
        [--epochs 5] [--epoch-seconds 2.0] [--poll-s 0.5] [--dataset DIR] [--out DIR] [--json out.json]
        [--engine optuna|ray_tune] [--launch forked|fresh]

It runs a real study (Optuna SQLite, MLflow SQLite, real trainer processes) and reports:

* **outside training**: study wall time minus the trainer processes' lifetimes, i.e. the gaps in
  which no trainer runs (ask, plan, MLflow child run, registry, tell, stop escalation), as a share
  of wall time;
* **tuner CPU**: the tuner process's CPU seconds over the whole study (watching MLflow/TensorBoard,
  the store, Optuna, MLflow) as a share of wall time. On a busy 2-core box this is what watching
  takes away from training. It includes the CPU spent in the gaps, so adding the two shares
  over-counts a little: the sum is an upper bound of the tuner's share (goal <= 5%);
* **log-to-decision latency**: from the trainer's timestamp of a validation (the MLflow metric
  timestamp or TensorBoard wall time) to the pruner's answer for it (goal <= 2 s); the watcher's own
  latency (received - logged) from the MetricsStore;
* **trainer start-up**: launch to the first metric (process start, imports, data, first epoch). It is
  part of the trainer's lifetime, not of the tuner's overhead, but it is what a restart costs;
  with ``--trainer ttsops`` also train.py's own account of it, phase by phase (the ``startup_*_s``
  metrics it logs after its first step: interpreter and imports, config, model and optimizer,
  checkpoint, data, MLflow/TensorBoard set-up, the first step), median over the generations.

``--launch fresh`` starts every generation's trainer as a new interpreter (``adapter.preload: []``)
instead of a fork of the fork server (trainer/fork_server.py): run both to see what a restart saves.

``--engine ray_tune`` runs the same generations on Ray Tune (``core_engine.primary_engine:
ray_tune``; ASHA with its grace period at the last validation, so no trial is stopped, one trial at a
time, like the Optuna engine's sequential generations): what Ray's scheduling, actors and result
plumbing add per trial. Ray's own daemons (GCS, raylet, workers) are measured by their CPU seconds
(psutil over the processes Ray started), since they are not the tuner process.

``--trainer foreign`` (default) drives the numpy toy trainer of the adapter tests
(tests/integration/smart_tuner/fixtures/foreign_trainer.py) paced to ``--epoch-seconds`` per epoch,
so generations last as long as asked and the result isolates the tuner. ``--trainer ttsops`` drives
the real ``python -m ttsops.train`` with tiny hparams on ``--dataset`` (default: 16 flite clips
synthesised into the output directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def study_config(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.integration.smart_tuner.fixtures import tuner_testkit as kit  # the integration tests' configs

    if args.trainer == "foreign":
        adapter = kit.foreign_adapter_dict(epoch_seconds=args.epoch_seconds, steps=20)
        data = kit.foreign_config(out, n_trials=args.generations, epochs=args.epochs, adapter=adapter)
    else:
        dataset = Path(args.dataset) if args.dataset else synth_dataset(out / "data")
        data = kit.real_config(out, dataset, n_trials=args.generations, epochs=args.epochs)
    data["smart_early_stopping"] = {"enabled": False}  # measure exactly --generations generations
    if args.launch == "fresh":  # every generation a new interpreter, as before the fork server
        data.setdefault("adapter", {})["preload"] = []
    elif args.trainer == "foreign":
        data["adapter"]["preload"] = ["numpy"]  # what the toy trainer imports
    if args.engine == "ray_tune":
        data["core_engine"]["primary_engine"] = "ray_tune"
        data["ray_tune"] = {"scheduler": "asha", "num_cpus": 2, "max_concurrent_trials": 1,
                            "grace_period": args.epochs, "max_epochs": args.epochs}
    return data


def synth_dataset(path: Path) -> Path:
    from ttsops.data.corpus import synth_corpus

    if not (path / "metadata.csv").is_file():
        synth_corpus(path, n=16, seed=0, progress=False, workers=1)
    return path


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from ttsops.config import parse_config
    from ttsops.smart_tuner.trainer.generation import RunnerConfig
    from ttsops.smart_tuner.trainer.metrics_store import MetricsStore, latency_summary
    from ttsops.smart_tuner.tuner import Tuner
    from ttsops.train.adapter import Tacotron2Adapter

    cfg = parse_config(study_config(args, out), "benchmark")
    ray_cpu = 0.0
    if args.engine == "ray_tune":
        summary, ray_cpu = run_ray(cfg)
    else:
        tuner = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=args.poll_s), trainer=Tacotron2Adapter(cfg.adapter))
        summary = tuner.run()
    st = summary.stats  # wall and CPU from the end of set-up (imports, stores) to the summary
    wall, cpu = st["wall_s"], st["tuner_cpu_s"]
    outside = wall - st["trainer_s"]
    with MetricsStore(summary.study_dir / "metrics.db") as store:
        watcher = store.latency_stats()
    decision = latency_summary(st["latencies"])
    return {
        "engine": args.engine,
        "launch": args.launch,
        "ray_daemons_cpu_s": ray_cpu,
        "trainer": args.trainer,
        "generations": st["generations"],
        "epochs": args.epochs,
        "setup_s": st["setup_s"],
        "poll_s": args.poll_s,
        "wall_s": wall,
        "trainer_s": st["trainer_s"],
        "outside_s": outside,
        "outside_share": outside / wall,
        "tuner_cpu_s": cpu,
        "tuner_cpu_share": cpu / wall,
        "overhead_share_upper_bound": (outside + cpu) / wall,
        "outside_per_generation_s": outside / max(1, st["generations"]),
        "stop_s": st["stop_s"],
        "decision_latency": decision,
        "watcher_latency": watcher,
        "trainer_startup_s": {
            "median": statistics.median(st["first_metric_s"]) if st["first_metric_s"] else None,
            "max": max(st["first_metric_s"], default=None),
        },
        "states": [r["state"] for r in summary.rows],
        "restart_phases_s": restart_phases(cfg) if args.trainer == "ttsops" else {},
    }


def run_ray(cfg: Any) -> tuple[Any, float]:
    """The study on Ray Tune, and the CPU seconds Ray's own processes spent (not the trainers)."""
    import psutil
    import ray

    from ttsops.smart_tuner.raytune.study import RayStudy
    from ttsops.train.adapter import Tacotron2Adapter

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    me = psutil.Process()
    try:
        summary = RayStudy(cfg, trainer=Tacotron2Adapter).run()
        cpu = 0.0
        for p in me.children(recursive=True):
            try:
                name = " ".join(p.cmdline())
                if "ttsops.train" in name or "foreign_trainer" in name:
                    continue  # a trainer (still exiting): training, not Ray
                t = p.cpu_times()
                cpu += t.user + t.system
            except psutil.Error:
                continue
    finally:
        ray.shutdown()
    return summary, cpu


def restart_phases(cfg: Any) -> dict[str, float]:
    """Median over the generations of the start-up phases train.py logged (``startup_<phase>_s``)."""
    from mlflow.tracking import MlflowClient

    from ttsops.infra.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg.monitoring.platforms.mlflow.tracking_uri, cfg.core_engine.work_dir))
    exp = client.get_experiment_by_name(cfg.monitoring.platforms.mlflow.experiment_name)
    runs = client.search_runs([exp.experiment_id], "metrics.startup_s > 0") if exp else []
    phases: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r.data.metrics.items():
            if k == "startup_s":
                phases.setdefault("total", []).append(v)
            elif k.startswith("startup_") and k.endswith("_s"):
                phases.setdefault(k.removeprefix("startup_").removesuffix("_s"), []).append(v)
    return {k: statistics.median(v) for k, v in phases.items()}


def report(r: dict[str, Any]) -> str:
    d, w = r["decision_latency"], r["watcher_latency"]
    rows = [
        ("trainer / generations x epochs", f"{r['trainer']} / {r['generations']} x {r['epochs']}"),
        ("study set-up, once (stores, MLflow, Optuna)", f"{r['setup_s']:.1f} s (not counted below)"),
        ("study wall time", f"{r['wall_s']:.1f} s (trainers alive {r['trainer_s']:.1f} s)"),
        (
            "outside training (gaps)",
            f"{r['outside_s']:.2f} s = {r['outside_share']:.1%} "
            f"({r['outside_per_generation_s']:.2f} s per generation)",
        ),
        ("engine", r["engine"] + (f" (Ray's daemons and trial actors: {r['ray_daemons_cpu_s']:.1f} CPU s, "
                                  f"{r['ray_daemons_cpu_s'] / r['wall_s']:.1%} of wall)" if r["engine"] == "ray_tune" else "")),
        ("tuner CPU (watching + gaps)", f"{r['tuner_cpu_s']:.2f} s = {r['tuner_cpu_share']:.1%}"),
        ("tuner share, upper bound (goal <= 5%)", f"{r['overhead_share_upper_bound']:.1%}"),
        (
            "log -> decision p50 / p95 / max (goal <= 2 s)",
            f"{d['p50']:.3f} / {d['p95']:.3f} / {d['max']:.3f} s over {int(d['count'])} reports",
        ),
        ("watcher latency p50 / p95 / max", f"{w['p50']:.3f} / {w['p95']:.3f} / {w['max']:.3f} s"),
        (
            "trainer start-up to first metric, median / max",
            f"{r['trainer_startup_s']['median']:.2f} / {r['trainer_startup_s']['max']:.2f} s",
        ),
        ("poll interval", f"{r['poll_s']} s"),
    ]
    if r["restart_phases_s"]:
        ph = r["restart_phases_s"]
        rows.insert(-1, ("train.py start-up by phase, median (train.py's own clock)",
                         ", ".join(f"{k} {v:.1f}" for k, v in ph.items() if k != "total")
                         + f" s = {ph.get('total', 0.0):.1f} s"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", choices=["foreign", "ttsops"], default="foreign")
    ap.add_argument("--engine", choices=["optuna", "ray_tune"], default="optuna")
    ap.add_argument("--launch", choices=["forked", "fresh"], default="forked",
                    help="trainers forked from the fork server (default, adapter.preload) or fresh interpreters")
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--epoch-seconds", type=float, default=2.0, help="foreign trainer: seconds per epoch")
    ap.add_argument("--poll-s", type=float, default=0.5, help="tuner poll interval")
    ap.add_argument(
        "--dataset", help="ttsops trainer: LJSpeech-layout dataset (default: synthesise 16 clips)"
    )
    ap.add_argument("--out", help="work directory (default: a temporary one)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="ttsops-tuner-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = run(args, out)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
