"""``ttsops demo``: run the stages in order (skipping those a previous run finished), then say
where everything is."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from ttsops.demo.plan import FULL, QUICK, REPO, Demo, read_marker, write_marker
from ttsops.demo.stages import (
    STAGES,
    commands,
)
from ttsops.errors import ConfigError

logger = logging.getLogger(__name__)




# --- what to print --------------------------------------------------------------------------------
def print_where(d: Demo, elapsed_s: float) -> None:
    from rich.table import Table

    t = Table(title=f"ttsops demo ({d.plan.name}) done in {elapsed_s / 60:.1f} min (this session)",
              show_header=False)
    for what, path in [("raw recordings", d.raw_dir), ("clips + transcripts", d.seg_dir),
                       ("dataset (LJSpeech, DVC-versioned)", d.dataset_dir),
                       ("study (best_model.pt, generations/)", d.study_dir),
                       ("MLflow store", d.tune_dir / "mlflow.db"), ("Optuna storage", d.tune_dir / "optuna.db"),
                       ("samples", d.samples_dir), ("report", d.report_dir / "index.html")]:
        t.add_row(what, str(path))
    d.console.print(t)
    d.console.print("stage times: " + ", ".join(f"{s} {d.info[s]['seconds']:.0f} s" for s, _, _ in STAGES
                                                if "seconds" in d.info.get(s, {})))
    for what, cmd in commands(d).items():
        d.console.print(f"[bold]{what}[/]:  {cmd}", soft_wrap=True)


# --- CLI ---------------------------------------------------------------------------------------------
def run(d: Demo, force: bool = False) -> None:
    rerun = force
    for i, (stage, title, fn) in enumerate(STAGES, 1):
        d.console.rule(f"[bold cyan]{i}/{len(STAGES)}  {stage}[/]: {title}")
        marker = None if rerun else read_marker(d.out, stage)
        if marker is not None and marker.get("plan") not in (None, d.plan.name):
            raise ConfigError(f"{d.out} holds a {marker['plan']!r} demo; use another --out for {d.plan.name!r}")
        if marker is not None:
            d.info[stage] = marker
            d.console.print(f"[dim]done earlier ({marker.get('seconds', 0):.0f} s): skipped[/]")
            continue
        rerun = True  # everything after a stage that ran again is stale
        t0 = time.monotonic()
        info = fn(d)
        info.update(plan=d.plan.name, seconds=round(time.monotonic() - t0, 1))
        d.info[stage] = info
        write_marker(d.out, stage, info)
        d.console.print(f"[green]{stage} done in {info['seconds']:.0f} s[/]")


def main(argv: list[str] | None = None) -> int:
    from rich import get_console

    ap = argparse.ArgumentParser(prog="ttsops demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    ap.add_argument("--minutes-budget", type=float, default=20.0,
                    help="wall-clock budget of the whole demo in minutes; tuning gets what is left (20)")
    ap.add_argument("--quick", action="store_true", help="tiny variant: a few clips, two 1-epoch generations")
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="tuner config")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="data-plane processes")
    ap.add_argument("--force", action="store_true", help="run every stage again (the study still resumes)")
    args = ap.parse_args(argv)
    if args.minutes_budget <= 0:
        raise ConfigError(f"--minutes-budget must be > 0, got {args.minutes_budget}")
    if not Path(args.config).is_file():
        raise ConfigError(f"tuner config not found: {args.config}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    d = Demo(Path(args.out).resolve(), QUICK if args.quick else FULL, args.minutes_budget,
             max(1, args.workers), Path(args.config).resolve(), get_console())
    d.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        run(d, args.force)
    except KeyboardInterrupt:
        d.console.print("[yellow]interrupted: run the same command again to resume[/]")
        return 130
    print_where(d, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
