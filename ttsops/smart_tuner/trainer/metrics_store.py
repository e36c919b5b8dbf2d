"""MetricsStore: the tuner's own history of every metric of every generation (SQLite, WAL).

One row per ``(run_id, generation, step, metric)``. ``add`` is idempotent: the LogWatcher may
deliver a record twice (a resumed tuner, a re-read event file) and nothing is counted twice. When a
record arrives again with a *newer* trainer timestamp (train.py was retried in the same run and
logged the same step again) the newer value replaces the old one: the curve shows what the trainer
logged last.

WAL mode keeps readers (a dashboard, ``ttsops report``) from blocking the tuner's writes, and every
``add`` is one transaction, so a tuner killed with ``kill -9`` leaves a consistent file that the
next ``MetricsStore(path)`` reopens as is.

Curves are keyed by generation (= Optuna trial number). A generation may span several MLflow runs
(a crashed train.py retried into a new run); ``curve`` merges them by step, the newest value
winning where two runs logged the same step.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsops.errors import TunerError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    run_id     TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    metric     TEXT    NOT NULL,
    value      REAL    NOT NULL,
    timestamp  REAL    NOT NULL,
    received   REAL    NOT NULL,
    PRIMARY KEY (run_id, generation, step, metric)
);
CREATE INDEX IF NOT EXISTS metrics_by_curve ON metrics (generation, metric, step);
"""

_UPSERT = """
INSERT INTO metrics (run_id, generation, step, metric, value, timestamp, received)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, generation, step, metric) DO UPDATE SET
    value = excluded.value, timestamp = excluded.timestamp, received = excluded.received
WHERE excluded.timestamp > metrics.timestamp
"""


@dataclass(frozen=True)
class MetricRecord:
    """One metric value as the tuner sees it, whatever backend it came from."""

    run_id: str  # MLflow run id (or TensorBoard log dir) the value came from
    generation: int  # Optuna trial number
    step: int  # trainer's global step
    metric: str  # ttsops metric name (after the adapter's metric_map)
    value: float
    timestamp: float  # when the trainer logged it (unix seconds)
    received: float  # when the watcher saw it (unix seconds)

    @property
    def latency(self) -> float:
        return self.received - self.timestamp


class MetricsStore:
    """SQLite history of metrics; safe to reopen after a crash; thread-safe within one process.

    Non-finite values are kept (a diverging run is information): inf as is, NaN through a
    sentinel (sqlite3 would store it as NULL), read back as ``float('nan')``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise TunerError(f"metrics store {self.path}: cannot open ({e})") from None

    # --- writing ------------------------------------------------------------------------------
    def add(self, records: Iterable[MetricRecord]) -> int:
        """Insert records; returns how many rows were new or updated (0 for pure duplicates)."""
        rows = [
            (
                r.run_id,
                int(r.generation),
                int(r.step),
                r.metric,
                _encode(r.value),
                float(r.timestamp),
                float(r.received),
            )
            for r in records
        ]
        if not rows:
            return 0
        with self._lock, self._conn:
            before = self._conn.total_changes
            self._conn.executemany(_UPSERT, rows)
            return self._conn.total_changes - before

    # --- reading ------------------------------------------------------------------------------
    def curve(self, generation: int, metric: str) -> list[tuple[int, float]]:
        """``(step, value)`` sorted by step; where several runs logged a step the newest wins."""
        rows = self._query(
            "SELECT step, value FROM metrics WHERE generation = ? AND metric = ? ORDER BY step, timestamp",
            (generation, metric),
        )
        merged: dict[int, float] = {}
        for step, value in rows:
            merged[int(step)] = _decode(value)
        return sorted(merged.items())

    def latest(self, generation: int, metric: str) -> float | None:
        """Value at the highest step of the curve, or None if the metric was never logged."""
        curve = self.curve(generation, metric)
        return curve[-1][1] if curve else None

    def history(self, generation: int) -> dict[str, list[tuple[int, float]]]:
        names = self._query(
            "SELECT DISTINCT metric FROM metrics WHERE generation = ? ORDER BY metric", (generation,)
        )
        return {name: self.curve(generation, name) for (name,) in names}

    def generations(self) -> list[int]:
        return [
            int(g) for (g,) in self._query("SELECT DISTINCT generation FROM metrics ORDER BY generation", ())
        ]

    def runs(self, generation: int) -> list[str]:
        """MLflow run ids (or log dirs) that delivered metrics for a generation, oldest first."""
        rows = self._query(
            "SELECT run_id, MIN(received) AS first FROM metrics WHERE generation = ? "
            "GROUP BY run_id ORDER BY first",
            (generation,),
        )
        return [r for (r, _) in rows]

    def latency_stats(self) -> dict[str, float]:
        """p50/p95/max (and count) of ``received - timestamp`` over every stored record."""
        rows = self._query("SELECT received - timestamp FROM metrics ORDER BY 1", ())
        return latency_summary([r for (r,) in rows])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Pure: ``{"count", "p50", "p95", "max"}`` of a list of latencies in seconds (NaN when empty)."""
    values = sorted(float(x) for x in latencies)
    if not values:
        return {"count": 0.0, "p50": math.nan, "p95": math.nan, "max": math.nan}

    def pct(q: float) -> float:  # nearest-rank percentile: always a value that was observed
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    return {"count": float(len(values)), "p50": pct(0.50), "p95": pct(0.95), "max": values[-1]}


# sqlite3 turns float('nan') into NULL, which the NOT NULL column refuses: keep NaN as a sentinel
# outside the range any metric can take, and turn it back on the way out.
_NAN_SENTINEL = -1.797e308


def _encode(value: float) -> float:
    value = float(value)
    return _NAN_SENTINEL if math.isnan(value) else value


def _decode(value: object) -> float:
    v = float(value)  # type: ignore[arg-type]
    return math.nan if v == _NAN_SENTINEL else v
