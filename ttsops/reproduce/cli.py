"""``ttsops reproduce RUN_ID`` (or ``models:/NAME@ALIAS``): rerun a recorded run and compare.

    ttsops reproduce 3f2a... --tracking-uri sqlite:///runs/demo/mlflow.db
    ttsops reproduce models:/ttsops-tacotron2@champion --tracking-uri sqlite:///demo_out/tune/mlflow.db
    ttsops reproduce 3f2a... --steps 200 --threads 4 --allow-other-commit

Refuses (one line, exit 2) when this tree is not the run's commit, or the run's data cannot be had
as it was; exits 1 when the rerun differs beyond the tolerance, 0 when it is identical or within.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError
from ttsops.reproduce.compare import DEFAULT_RTOL, side_by_side
from ttsops.reproduce.rerun import Options, Rerun


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ttsops reproduce", description=__doc__.splitlines()[0])
    p.add_argument("run", help="MLflow run id, models:/NAME@ALIAS or models:/NAME/VERSION")
    p.add_argument("--tracking-uri", default=None, help="the run's MLflow store (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("-o", "--output", type=Path, default=None, help="work directory (default: reproductions/<run id>)")
    p.add_argument("--steps", type=int, default=None, help="rerun only this many global steps of the run")
    p.add_argument("--allow-other-commit", action="store_true",
                   help="run even when this tree is not the run's commit (a warning names the difference)")
    p.add_argument("--parent", choices=("reproduce", "artifact"), default="reproduce",
                   help="a warm-started run: rerun the run it started from (default), or take its checkpoint as recorded")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as recorded)")
    p.add_argument("--device", default=None, help="torch device type (default: as recorded)")
    p.add_argument("--dataset", type=Path, default=None, help="use this dataset directory (checked against the record)")
    p.add_argument("--data-repo", type=Path, default=None,
                   help="DVC project holding the run's dataset versions (default: the recorded dataset's)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help=f"relative tolerance of the val_loss curve (default {DEFAULT_RTOL:g})")
    return p


def _options(args: argparse.Namespace) -> Options:
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("no MLflow store: pass --tracking-uri URI (or set MLFLOW_TRACKING_URI)")
    for flag, value in (("--steps", args.steps), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    out = args.output or Path("reproductions") / args.run.replace("models:/", "").replace("/", "_").replace("@", "_")
    return Options(uri, out.resolve(), args.steps, args.parent, args.threads, args.device, args.dataset,
                   args.data_repo, args.rtol)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.9g}"


def print_rerun(console: Any, r: Rerun) -> None:
    from rich.table import Table

    console.print(f"\n[bold]{r.record.label()}[/] -> reproduction {r.run_id}")
    key = "val_loss" if "val_loss" in r.record.curves else "train_loss"
    curve = Table(title=f"{key}, side by side")
    for col in ("step", "original", "reproduced", "difference"):
        curve.add_column(col, justify="right")
    for step, a, b in side_by_side(r.record.curves.get(key, {}), r.curves.get(key, {}), r.stop[0]):
        diff = "-" if a is None or b is None else ("0" if a == b or (math.isnan(a) and math.isnan(b)) else f"{b - a:+.3g}")
        curve.add_row(str(step), _fmt(a), _fmt(b), diff)
    console.print(curve)
    table = Table(title="largest difference per metric")
    for col in ("metric", "steps", "max |diff|", "at step", "max rel", "note"):
        table.add_column(col, justify="left" if col in ("metric", "note") else "right")
    for d in r.diffs:
        gaps = [f"only original: {len(d.only_original)}"] * bool(d.only_original) + \
               [f"only reproduced: {len(d.only_reproduced)}"] * bool(d.only_reproduced)
        table.add_row(d.name, str(d.points), f"{d.max_abs:.3g}", "-" if d.at_step is None else str(d.at_step),
                      f"{d.max_rel:.3g}", "identical" if d.identical else ", ".join(gaps))
    console.print(table)
    if r.weights:
        console.print(r.weights)
    colour = {"identical": "green", "within tolerance": "yellow"}.get(r.verdict.label, "red")
    console.print(f"[{colour}]{r.verdict.label}[/]: {r.verdict.reason}")


def main(argv: list[str] | None = None) -> int:
    from mlflow import MlflowClient
    from rich.console import Console

    from ttsops.infra.gitinfo import git_state
    from ttsops.reproduce.rerun import reproduce

    args = build_parser().parse_args(argv)
    opts = _options(args)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console = Console(width=None if sys.stdout.isatty() else 160)
    client = MlflowClient(tracking_uri=opts.tracking_uri, registry_uri=opts.tracking_uri)
    here = git_state(Path(__file__).resolve().parents[1])
    reruns = reproduce(client, args.run, opts, here, args.allow_other_commit,
                       lambda line: console.print(line, markup=False, highlight=False))
    for r in reruns:
        print_rerun(console, r)
    console.print(f"\nreport: {opts.out / 'report.json'}")
    return 0 if reruns[-1].verdict.ok else 1
