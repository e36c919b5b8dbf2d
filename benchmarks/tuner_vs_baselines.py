"""Is the Smart Tuner worth it? It against plain Optuna and the default config, at equal CPU budget.

    .venv/bin/python benchmarks/tuner_vs_baselines.py [--dataset DIR | --clips 80] [--budget-min 6]
        [--seeds 0,1,2] [--arms smart,optuna,default] [--n-trials 11] [--hparams "k=v,..."]
        [--set KEY=VALUE ...] [--eval-sentences 10] [--no-eval] [--out DIR] [--json out.json] [--png curves.png]

Three arms, each given the same budget of CPU seconds, one after the other (one trainer at a time,
``resources.num_threads: 1``), for every seed:

* ``smart``: the Smart Tuner as shipped: ``configs/demo.yaml``'s tuner settings (TPE, Hyperband
  2..6 epochs with eta 3, 6-epoch generations warm-restarted from the best checkpoint, the
  EarlyStopController with its study-level patience), ``n_trials`` raised to ``--n-trials`` so that
  the budget, not the trial count, ends the study (11 keeps the demo's single Hyperband bracket);
* ``optuna``: plain Optuna: TPE + MedianPruner, the same search space and generation length, every
  trial fresh (``core_engine.resume_from_checkpoint: false``) and sampled (``optimization.
  enqueue_baseline: false``), no early-stop controller (``smart_early_stopping.enabled: false``);
* ``default``: ``python -m ttsops.train`` with the demo's hparams (no search) as one run for the
  whole budget, then SIGINT (it saves a checkpoint).

Budget and clock: CPU seconds (user + system) of the benchmark process, which runs the tuner
in-process, plus every trainer process it started (psutil over the live process tree, plus the
reaped children's times from ``getrusage``), counted from the arm's start. A thread samples it every
0.5 s; a study stops through the tuner's own budget path (the running generation is stopped and
completes with the value it reached), the default run gets SIGINT. Wall time is not used: on a
shared box it depends on everyone else's jobs.

Curves: every validation's objective (``ttsops/smart_tuner/search/objective.py``, lower is better)
at the CPU the arm had used when it was logged (its MLflow timestamp mapped through the samples):
the tuner's ``objective`` metric of each child run; for the default run the same function of the
metrics train.py logged. "Best so far" is the running minimum; "at the budget" counts validations
logged within it (a stop overshoots by a few CPU seconds while the trainer saves). ``intelligibility_every: -1`` in
every arm: the ASR check is too dear to run inside a 6-minute budget, so the objective's ``asr_wer``
term is its worst case (1.0) everywhere and every arm's kept checkpoint (the study's
``best_model.pt``; the default run's ``checkpoint_best.pt``) is scored once afterwards with ``ttsops
evaluate`` (in-domain list, ``--eval-sentences`` sentences; outside the budget).

Reported per arm and seed: the best objective at the budget (any validation), the objective of the
checkpoint the arm keeps (``kept``: the study's best generation's value, its best validation; for the
default run the validation train.py keeps as ``checkpoint_best.pt``, its lowest ``val_loss``), the CPU it took to reach plain Optuna's best (that seed's ``optuna`` arm at its budget), and
the WER; the ratio smart / optuna of those CPU times (median over seeds; acceptance in issue 19:
<= 0.6) and whether smart ends below default.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ARMS = ("smart", "optuna", "default")
Point = tuple[float, float]  # (CPU seconds into the arm, objective)


# --- pure parts ---------------------------------------------------------------------------------
def best_so_far(points: Sequence[Point]) -> list[Point]:
    """The running minimum of ``(cpu_s, objective)`` points, in CPU order; non-finite values skipped."""
    out: list[Point] = []
    for cpu, value in sorted(points):
        if math.isfinite(value) and (not out or value < out[-1][1]):
            out.append((cpu, value))
    return out


def cpu_to_reach(curve: Sequence[Point], target: float) -> float | None:
    """CPU seconds at which a best-so-far curve first reaches ``target`` or lower; None if never."""
    return next((cpu for cpu, value in curve if value <= target), None)


def best_at(curve: Sequence[Point], budget_s: float) -> float:
    """The best objective reached within ``budget_s`` (inf if none)."""
    return min((v for c, v in curve if c <= budget_s), default=math.inf)


def cpu_at(samples: Sequence[Point], wall: float) -> float:
    """The arm's CPU at wall time ``wall``, linear between the ``(wall, cpu)`` samples (clamped)."""
    if not samples:
        raise ValueError("no CPU samples")
    walls = [w for w, _ in samples]
    i = bisect_left(walls, wall)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (w0, c0), (w1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (wall - w0) / (w1 - w0) if w1 > w0 else c1


def verdict(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per seed the CPU ratio smart / optuna to reach optuna's best, and smart's best against default's
    (both at the budget); the median ratio and the acceptance of issue 19 (<= 0.6x, and better)."""
    ratios, better = [], []
    for seed, opt in runs.get("optuna", {}).items():
        smart, default = runs.get("smart", {}).get(seed), runs.get("default", {}).get(seed)
        if smart is not None:
            mine, theirs = smart["cpu_to_optuna_best_s"], opt["cpu_to_optuna_best_s"]
            ratios.append(math.inf if mine is None else mine / max(theirs, 1e-9))
        if smart is not None and default is not None:
            better.append(smart["best_at_budget"] < default["best_at_budget"])
    median = statistics.median(ratios) if ratios else None
    return {
        "cpu_ratio_per_seed": ratios,
        "median_cpu_ratio": median,
        "smart_beats_default_per_seed": better,
        "accepted": bool(ratios and better and median is not None and median <= 0.6 and all(better)),
    }


# --- CPU of the process tree --------------------------------------------------------------------
def tree_cpu_s() -> float:
    """CPU seconds of this process, its reaped descendants and every live descendant."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += ru.ru_utime + ru.ru_stime
    for p in me.children(recursive=True):
        try:
            c = p.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:  # exited between the listing and the read: getrusage has it once reaped
            continue
    return total


class CpuMeter:
    """Samples ``(wall, CPU since start)`` every ``every_s`` in a thread (Event wait, no sleep loop)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.samples: list[Point] = []
        self._stop = threading.Event()
        self._base = tree_cpu_s()
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> float:
        cpu = tree_cpu_s() - self._base
        self.samples.append((time.time(), cpu))
        return cpu

    @property
    def cpu_s(self) -> float:
        return self.samples[-1][1]

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --- the arms -----------------------------------------------------------------------------------
def arm_config(arm: str, seed: int, out: Path, dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    """configs/demo.yaml, re-pointed at ``out`` and ``dataset``, changed as the arm says, then ``--set``."""
    from ttsops.config.loading import apply_overrides

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    ce = data["core_engine"]
    ce.update(
        work_dir=str(out / "tune"),
        study_name=f"{arm}_{seed}",
        n_trials=args.n_trials,
        wall_clock_budget_minutes=None,
    )  # the CPU budget ends it
    data["monitoring"]["platforms"]["mlflow"] = {
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "experiment_name": f"{arm}_{seed}",
    }
    data["monitoring"]["platforms"]["tensorboard"] = {"enabled": False}
    data["optimization"]["seed"] = seed
    data["training"]["dataset"] = str(dataset)
    hp = data["training"]["hparams"]
    hp.update(seed=seed, intelligibility_every=-1)
    for kv in filter(None, args.hparams.split(",")):
        k, v = kv.split("=", 1)
        hp[k.strip()] = yaml.safe_load(v)
    if arm == "optuna":
        data["optimization"]["pruner"] = "median"
        data["optimization"]["enqueue_baseline"] = False  # every trial sampled, none given
        ce["resume_from_checkpoint"] = False
        data["smart_early_stopping"] = {**data.get("smart_early_stopping", {}), "enabled": False}
    return apply_overrides(data, args.set, f"--set for the {arm} arm")


def run_study(arm: str, seed: int, out: Path, dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One tuner study under the CPU budget: its objective points and best checkpoint."""
    from ttsops.config import parse_config
    from ttsops.smart_tuner.tuner import Tuner
    from ttsops.train.adapter import Tacotron2Adapter

    budget = args.budget_min * 60

    class CpuBudgetTuner(Tuner):
        def _over_budget(self) -> bool:  # the tuner's wall-clock budget path, on the arm's CPU
            return meter.cpu_s >= budget

        def _budget_reason(self) -> str:
            return f"CPU budget ({budget:.0f} s) spent"

    cfg = parse_config(arm_config(arm, seed, out, dataset, args), f"{arm} seed {seed}")
    meter = CpuMeter()
    try:
        summary = CpuBudgetTuner(cfg, trainer=Tacotron2Adapter(cfg.adapter)).run()
    finally:
        meter.close()
    points = study_points(cfg.tracking_uri(), f"{arm}_{seed}", meter.samples)
    best = summary.study_dir / "best_model.pt"
    return {
        "points": points,
        "cpu_s": meter.cpu_s,
        "generations": len(summary.rows),
        "states": [r["state"] for r in summary.rows],
        "stop_reason": summary.stop_reason,
        "study_best": summary.best_value,  # the value best_model.pt holds: a generation's best validation
        "checkpoint": str(best) if best.is_file() else None,
    }


def study_points(uri: str, experiment: str, samples: Sequence[Point]) -> list[Point]:
    """Every child run's ``objective`` history as (CPU s, value)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "metrics.objective > -1e30") if exp else []
    return [
        (cpu_at(samples, m.timestamp / 1000), m.value)
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "objective")
    ]


def run_default(seed: int, out: Path, dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    """train.py with the demo hparams as one run, SIGINT once the budget's CPU is spent."""
    from mlflow.tracking import MlflowClient

    data = arm_config("default", seed, out, dataset, args)
    config = out / "train_config.yaml"
    config.write_text(yaml.safe_dump(data))
    uri = data["monitoring"]["platforms"]["mlflow"]["tracking_uri"]
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment(f"default_{seed}")).info.run_id
    run_dir = out / "run"
    cmd = [sys.executable, "-m", "ttsops.train", "-o", str(run_dir), "-l", str(run_dir / "logs"), "--config",
           str(config), "--dataset", str(dataset), "--tracking_uri", uri, "--run_id", run_id, "--hparams", "epochs=100000"]
    meter = CpuMeter()
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        stopped = threading.Event()
        while proc.poll() is None and meter.cpu_s < args.budget_min * 60:
            stopped.wait(0.5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=600)
    meter.close()
    if code != 0:
        raise SystemExit(f"train.py exited {code}: see {out / 'train.log'}")
    best = run_dir / "checkpoint_best.pt"  # train.py's: the lowest val_loss, what a user of it ships
    points = run_points(client, run_id, objective_weights_of(data), meter.samples)
    kept = kept_point(client, run_id, points)
    return {
        "points": points,
        "study_best": kept,
        "cpu_s": meter.cpu_s,
        "generations": 1,
        "states": ["complete"],
        "stop_reason": "CPU budget",
        "checkpoint": str(best) if best.is_file() else None,
    }


def kept_point(client: Any, run_id: str, points: Sequence[Point]) -> float | None:
    """The objective of the validation train.py kept as its best (the first lowest ``val_loss``)."""
    losses = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_loss"))
    if not losses or len(losses) != len(points):
        return points[-1][1] if points else None
    i = min(range(len(losses)), key=lambda k: (losses[k][1], k))
    return points[i][1]


def objective_weights_of(data: dict[str, Any]) -> Any:
    from ttsops.config import parse_config
    from ttsops.smart_tuner.search.objective import objective_weights

    return objective_weights(parse_config(data, "default"))


def run_points(client: Any, run_id: str, weights: Any, samples: Sequence[Point]) -> list[Point]:
    """The tuner's objective of each validation of a plain train.py run (the tuner's own function)."""
    from ttsops.smart_tuner.search.objective import objective
    from ttsops.smart_tuner.trainer.validations import metrics_at

    names = client.get_run(run_id).data.metrics
    hist = {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in names}
    logged = {m.step: m.timestamp for m in client.get_metric_history(run_id, "val_loss")}
    return [
        (cpu_at(samples, ts / 1000), objective(metrics_at(hist, step), weights))
        for step, ts in sorted(logged.items())
    ]


def evaluate_wer(checkpoint: str | None, sentences: int, out: Path) -> float | None:
    """In-domain held-out WER of a checkpoint with ``ttsops evaluate`` (not counted in the budget)."""
    if checkpoint is None:
        return None
    js = out / "eval.json"
    cmd = [sys.executable, "-m", "ttsops", "evaluate", "--model", checkpoint, "--threads", "1", "--lists", "in_domain",
           "--sentences", str(sentences), "--json", str(js)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        logging.warning("ttsops evaluate %s failed: %s", checkpoint, done.stderr[-500:])
        return None
    return float(json.loads(js.read_text())["in_domain"]["wer"])


# --- reporting ----------------------------------------------------------------------------------
def plot(runs: dict[str, dict[int, dict[str, Any]]], budget_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"smart": "tab:blue", "optuna": "tab:orange", "default": "tab:green"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm, seeds in runs.items():
        for k, (seed, r) in enumerate(sorted(seeds.items())):
            curve = r["curve"]
            if not curve:
                continue
            xs = [c / 60 for c, _ in curve] + [min(r["cpu_s"], budget_s) / 60]  # to where the arm stopped
            ys = [v for _, v in curve] + [curve[-1][1]]
            ax.step(
                xs,
                ys,
                where="post",
                color=colours.get(arm),
                alpha=0.85,
                linestyle=("-", "--", ":")[k % 3],
                label=f"{arm} seed {seed}",
            )
    ax.set_xlabel("CPU-minutes (trainers + tuner)")
    ax.set_yscale("log")
    ax.set_ylabel("best objective so far (lower is better, log scale)")
    ax.set_title("Smart Tuner against plain Optuna and the default config, equal CPU budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(runs: dict[str, dict[int, dict[str, Any]]], v: dict[str, Any]) -> str:
    def fmt(x: float | None, spec: str = ".3f") -> str:
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)

    lines = [
        f"{'arm':<8}{'seed':>5}{'CPU min':>9}{'gens':>6}{'best obj':>10}{'kept':>7}{'CPU min to optuna best':>24}"
        f"{'WER':>7}  states"
    ]
    for arm, seeds in runs.items():
        for seed, r in sorted(seeds.items()):
            reach = r["cpu_to_optuna_best_s"]
            lines.append(
                f"{arm:<8}{seed:>5}{r['cpu_s'] / 60:>9.2f}{r['generations']:>6}{fmt(r['best_at_budget']):>10}"
                f"{fmt(r.get('study_best')):>7}"
                f"{fmt(None if reach is None else reach / 60, '.2f'):>24}{fmt(r['wer'], '.2f'):>7}  "
                + " ".join(s[0] for s in r["states"])
            )
    def ratio(x: float | None) -> str:
        return "never" if x == math.inf else fmt(x, ".2f")

    ratios = ", ".join(ratio(x) for x in v["cpu_ratio_per_seed"])
    lines.append(
        f"smart / optuna CPU to reach optuna's best: {ratios} (median {ratio(v['median_cpu_ratio'])}; never = not reached, "
        f"target <= 0.6); smart ends below default: {v['smart_beats_default_per_seed']}; "
        f"accepted: {v['accepted']}"
    )
    return "\n".join(lines)


def finish(runs: dict[str, dict[int, dict[str, Any]]], budget_s: float) -> dict[str, Any]:
    """Curves, best at the budget and CPU to reach that seed's optuna best, in place; the verdict."""
    for seeds in runs.values():
        for r in seeds.values():
            r["curve"] = best_so_far(r["points"])
            r["best_at_budget"] = best_at(r["curve"], budget_s)
    for seeds in runs.values():
        for seed, r in seeds.items():
            opt = runs.get("optuna", {}).get(seed)
            r["cpu_to_optuna_best_s"] = cpu_to_reach(r["curve"], opt["best_at_budget"]) if opt else None
    return verdict(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", help="LJSpeech-layout dataset (default: synthesise --clips flite clips)")
    ap.add_argument("--clips", type=int, default=80)
    ap.add_argument("--budget-min", type=float, default=6.0, help="CPU-minutes per arm and seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument(
        "--n-trials", type=int, default=11, help="tuner arms' n_trials (the budget should end them)"
    )
    ap.add_argument("--hparams", default="", help="k=v,... over the demo hparams, every arm")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every arm after its own changes (e.g. core_engine.epochs_per_generation=12)",
    )
    ap.add_argument("--eval-sentences", type=int, default=10, help="in-domain sentences for the final WER")
    ap.add_argument("--no-eval", action="store_true", help="skip the final WER")
    ap.add_argument("--out", help="work directory (default: a temporary one)")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--png", help="write the curves here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arms = [a for a in args.arms.split(",") if a]
    if unknown := set(arms) - set(ARMS):
        ap.error(f"unknown arms {sorted(unknown)}; use any of {', '.join(ARMS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per registry pull
    with tempfile.TemporaryDirectory(prefix="ttsops-tvb-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        dataset = Path(args.dataset) if args.dataset else synth(out / "data", args.clips)
        runs: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
        for seed in (int(s) for s in args.seeds.split(",")):
            for arm in arms:
                where = out / f"{arm}_{seed}"
                where.mkdir(parents=True, exist_ok=True)
                print(f"{arm} seed {seed}: load average {os.getloadavg()[0]:.1f}", flush=True)
                r = (
                    run_default(seed, where, dataset, args)
                    if arm == "default"
                    else run_study(arm, seed, where, dataset, args)
                )
                r["wer"] = None if args.no_eval else evaluate_wer(r["checkpoint"], args.eval_sentences, where)
                runs[arm][seed] = r
                save(runs, args)  # each arm as it ends: a long run that dies keeps what it did
        v = finish(runs, args.budget_min * 60)
        save(runs, args, v)
    print(report(runs, v))
    return 0


def synth(path: Path, n: int) -> Path:
    from ttsops.data.corpus import synth_corpus

    if not (path / "metadata.csv").is_file():
        synth_corpus(path, n=n, seed=0, progress=False, workers=1)
    return path


def save(
    runs: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace, v: dict[str, Any] | None = None
) -> None:
    if args.json:
        meta = {
            "budget_cpu_s": args.budget_min * 60,
            "seeds": args.seeds,
            "hparams": args.hparams,
            "set": args.set,
            "n_trials": args.n_trials,
            "eval_sentences": args.eval_sentences,
        }
        doc = {"meta": meta, "runs": runs, "verdict": v}
        Path(args.json).write_text(json.dumps(json_safe(doc), indent=1, default=str))
    if args.png and v is not None:
        plot(runs, args.budget_min * 60, Path(args.png))


def json_safe(x: Any) -> Any:
    """Non-finite floats as null (strict JSON has no Infinity: a target never reached is null)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


if __name__ == "__main__":
    sys.exit(main())
