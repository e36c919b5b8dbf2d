"""``ttsops tune --config YAML [key=value ...]`` (also ``smart_tuner`` and ``./smart_tuner.py``):
run or resume a study, print its generation table.

The tuner is trainer-agnostic: it drives whatever ``TrainerAdapter`` it is given. ``main`` here
takes one; ``ttsops.tune`` (what the ``ttsops tune`` command runs) hands it our Tacotron2 adapter.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ttsops.config import AdapterConfig, load_config
from ttsops.smart_tuner.study.history import StudySummary
from ttsops.smart_tuner.trainer.adapter import CommandAdapter, TrainerAdapter
from ttsops.smart_tuner.tuner import Tuner

logger = logging.getLogger(__name__)


def main(
    argv: list[str] | None = None,
    trainer: Callable[[AdapterConfig], TrainerAdapter] = CommandAdapter,
) -> int:
    """``trainer`` makes the TrainerAdapter from the config's ``adapter`` section."""
    ap = argparse.ArgumentParser(prog="ttsops tune", description="Run or resume a Smart Tuner study.")
    ap.add_argument("--config", required=True, help="tuner config YAML (smart_tuner_config_v2.yaml layout)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. core_engine.n_trials=6")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    stop = threading.Event()
    if cfg.core_engine.primary_engine == "ray_tune":
        from ttsops.smart_tuner.raytune import require_ray

        require_ray()
        from ttsops.smart_tuner.raytune.study import RayStudy

        with graceful_signals(stop):
            summary = RayStudy(cfg, stop_event=stop, trainer=trainer).run()
    else:
        with graceful_signals(stop):
            summary = Tuner(cfg, stop_event=stop, trainer=trainer(cfg.adapter)).run()
    print_summary(summary)
    return 130 if summary.status == "interrupted" else 0


@contextmanager
def graceful_signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop cleanly; the second: the default action (exit at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        logger.warning("signal %d: stopping the study after the running generation is stopped", signum)
        stop.set()
        for s, h in old.items():
            signal.signal(s, h)

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)




def print_summary(s: StudySummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"study {s.study}: {s.status} ({s.stop_reason})")
    for col in ("trial", "state", "value", "epochs", "start", "warm-start source", "preempted", "params", "s"):
        table.add_column(col)
    for r in s.rows:
        value = "" if r["value"] is None else f"{r['value']:.5g}"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        table.add_row(
            str(r["trial"]),
            r["state"],
            value,
            str(r["epochs"]),
            r["start"],
            r["warm_start_source"].split(":")[0],
            str(r.get("preemptions") or ""),
            params,
            str(r["seconds"] or ""),
        )
    Console().print(table)
    n = s.stats.get("preemptions", 0)
    if n:
        Console().print(
            f"preemptions: {n} (resumed from their checkpoints; not counted against n_trials or max_retries)"
        )
    if s.best_trial is not None:
        Console().print(
            f"best: trial {s.best_trial}, objective {s.best_value:.5g}; {s.study_dir / 'best_model.pt'}"
        )
