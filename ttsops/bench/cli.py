"""``ttsops bench early-stop CURVES_DIR``: the command line and the tables of the replay harness
(the definitions, the replay and the summaries are in ``ttsops/bench/replay.py``)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import typing
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ttsops.bench.curves import load_curves
from ttsops.bench.replay import (
    LABEL_METHODS,
    Outcome,
    acceptance,
    by_label,
    ceiling,
    evaluate,
    summarize,
)
from ttsops.config import load_config
from ttsops.errors import ConfigError
from ttsops.smart_tuner.early_stop.controller import DetectorParams


# --- tables ----------------------------------------------------------------------------------------
def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.2%}" if pct else f"{v:.2f}"
    return str(v)


def _print_tables(console: Any, rows: list[dict[str, Any]], outcomes: list[Outcome], times: list[tuple[float, float]],
                  checks: list[tuple[str, bool]], per_curve: bool, n_curves: int, sources: str, min_delta: float) -> None:
    from rich.table import Table

    table = Table(title=f"early stopping on {n_curves} curves ({sources})")
    for col in ("method", "stopped", "median S", "mean S", "median R", "false stops", "median R raw",
                "false raw", "false raw (healthy)", "false true*", "align-fail latency med/max", "missed (>3)", "plateau<align"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['stopped']}/{r['curves']}", _fmt(r["median_S"]), _fmt(r["mean_S"]),
                      _fmt(r["median_R"], True), _fmt(r["false_stop_rate"], True), _fmt(r["median_R_raw"], True),
                      _fmt(r["false_stop_rate_raw"], True), _fmt(r["false_stop_rate_raw_healthy"], True),
                      _fmt(r["false_stop_rate_true"], True),
                      f"{_fmt(r['latency_median'])}/{_fmt(r['latency_max'])}",
                      f"{r['failures_missed']}/{r['align_failures']}", str(r["plateau_before_alignment"]))
    console.print(table)
    labels = Table(title="per label: median S (false stops); share of the oracle's mean S the ensemble earns")
    for col in ("label", "curves", *(m if m != "patience" else "patience (5)" for m in LABEL_METHODS), "oracle share"):
        labels.add_column(col, justify="left" if col == "label" else "right")
    for r in by_label(outcomes, min_delta):
        labels.add_row(r["label"], str(r["curves"]), *(f"{_fmt(r.get(f'{m}_median_S'))} ({r.get(f'{m}_false', '-')})"
                                                       for m in LABEL_METHODS), _fmt(r["oracle_share"], True))
    console.print(labels)
    if per_curve:
        detail = Table(title="per curve: ensemble vs patience (stop@validation reason, S, R)")
        for col in ("curve", "label", "ensemble", "S", "R", "patience", "S ", "R "):
            detail.add_column(col)
        by = {(o.curve, o.method): o for o in outcomes}
        for name in dict.fromkeys(o.curve for o in outcomes):
            e, p = by[(name, "ensemble")], by[(name, "patience")]
            detail.add_row(name, e.label, f"{e.stop or '-'} {e.reason}", _fmt(e.saved), _fmt(e.regret, True),
                           f"{p.stop or '-'} {p.reason}", _fmt(p.saved), _fmt(p.regret, True))
        console.print(detail)
    for i, kind in ((1, "CPU"), (0, "wall")):
        ordered = sorted(t[i] for t in times) or [0.0]
        console.print(f"decision time ({kind}): median {statistics.median(ordered):.1f} ms, "
                      f"p95 {ordered[int(0.95 * (len(ordered) - 1))]:.1f} ms, max {ordered[-1]:.1f} ms "
                      f"over {len(times)} decisions")
    for text, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")
    console.print(ceiling(rows))


def detector_params(items: Sequence[str]) -> DetectorParams:
    """``KEY=VALUE`` overrides of :class:`DetectorParams` (the knobs the YAML does not expose)."""
    hints = typing.get_type_hints(DetectorParams)
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in hints:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE with KEY one of {', '.join(hints)}")
        kinds = [t for t in typing.get_args(hints[key]) or (hints[key],) if t is not type(None)]
        optional = type(None) in typing.get_args(hints[key])
        if value.lower() == "none":
            if not optional:
                raise ConfigError(f"--param {item!r}: {key} cannot be none")
            changes[key] = None
            continue
        try:
            changes[key] = kinds[0](value)
        except ValueError:
            raise ConfigError(f"--param {item!r}: {value!r} is not a valid {kinds[0].__name__}") from None
    return DetectorParams(**changes)


def early_stop_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    cfg = load_config(args.config, args.set)
    curves = load_curves(Path(args.curves_dir))
    if args.label:
        labels = sorted({c.label for c in curves})
        curves = [c for c in curves if c.label in args.label]
        if not curves:
            raise ConfigError(f"--label {', '.join(args.label)}: no curve in {args.curves_dir} has it "
                              f"(labels there: {', '.join(labels)})")
    console = Console() if Console().is_terminal else Console(width=170)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("replaying curves", total=len(curves))
        outcomes, times = evaluate(curves, cfg, detector_params(args.param), progress=lambda: bar.advance(task))
    md = cfg.smart_early_stopping.tuner_min_delta
    rows = summarize(outcomes, md)
    checks = acceptance(rows, times)
    kinds = ", ".join(f"{k}: {sum(c.source == k for c in curves)}" for k in sorted({c.source for c in curves}))
    _print_tables(console, rows, outcomes, times, checks, args.per_curve, len(curves), kinds, md)
    if args.json:
        out = {"summary": rows, "checks": checks, "ceiling": ceiling(rows), "by_label": by_label(outcomes, md),
               "outcomes": [asdict(o) for o in outcomes]}
        Path(args.json).write_text(json.dumps(out, indent=1, default=lambda v: None if isinstance(v, float) else str(v)))
    return 1 if args.check and not all(ok for _, ok in checks) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ttsops bench", description="replay benchmarks")
    sub = ap.add_subparsers(dest="bench", required=True)
    es = sub.add_parser("early-stop", help="replay learning curves through the EarlyStopController")
    es.add_argument("curves_dir", help="folder of curve files (*.json, *.csv; see benchmarks/curves/FORMAT.md)")
    es.add_argument("--config", help="TunerConfig YAML (its smart_early_stopping section is used)")
    es.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. smart_early_stopping.tuner_min_delta=0.01")
    es.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="detector knob (DetectorParams), e.g. stop_threshold=0.65 or collapse_margin=0.1")
    es.add_argument("--label", action="append", help="only curves with this label (repeatable)")
    es.add_argument("--per-curve", action="store_true", help="also print every curve's outcome")
    es.add_argument("--json", help="write summary, checks and every outcome to this JSON file")
    es.add_argument("--check", action="store_true", help="exit 1 when an acceptance target is missed")
    args = ap.parse_args(argv)
    return early_stop_main(args)
