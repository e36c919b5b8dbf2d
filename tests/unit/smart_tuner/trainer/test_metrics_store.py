"""MetricsStore: a real SQLite file in tmp_path; dedupe, curves, reopen after a crash."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys

import pytest

from ttsops.smart_tuner.trainer.metrics_store import MetricRecord, MetricsStore, latency_summary


def rec(
    step: int,
    value: float,
    *,
    metric: str = "val_loss",
    gen: int = 0,
    run: str = "r1",
    ts: float = 100.0,
    received: float | None = None,
) -> MetricRecord:
    return MetricRecord(run, gen, step, metric, value, ts + step, (received or ts + 0.5) + step)


@pytest.fixture
def store(tmp_path):
    s = MetricsStore(tmp_path / "metrics.db")
    yield s
    s.close()


def test_add_and_curve_sorted_by_step(store):
    assert store.add([rec(3, 0.7), rec(1, 0.9), rec(2, 0.8)]) == 3
    assert store.curve(0, "val_loss") == [(1, 0.9), (2, 0.8), (3, 0.7)]
    assert store.latest(0, "val_loss") == 0.7
    assert store.latest(0, "mcd") is None
    assert store.curve(1, "val_loss") == []


def test_duplicates_are_dropped(store):
    batch = [rec(1, 0.9), rec(2, 0.8)]
    assert store.add(batch) == 2
    assert store.add(batch) == 0  # same records again (a re-read event file)
    assert store.add(batch + [rec(3, 0.7)]) == 1
    assert store.curve(0, "val_loss") == [(1, 0.9), (2, 0.8), (3, 0.7)]


def test_newer_timestamp_replaces_same_step_older_does_not(store):
    store.add([rec(5, 1.0, ts=100.0)])
    assert store.add([rec(5, 0.5, ts=50.0)]) == 0  # older: ignored
    assert store.add([rec(5, 0.4, ts=200.0)]) == 1  # train.py retried and logged step 5 again
    assert store.curve(0, "val_loss") == [(5, 0.4)]


def test_generation_curve_merges_runs_newest_wins(store):
    store.add([rec(1, 1.0, run="a", ts=10), rec(2, 0.9, run="a", ts=10)])
    store.add([rec(2, 0.8, run="b", ts=20), rec(3, 0.7, run="b", ts=20)])
    assert store.curve(0, "val_loss") == [(1, 1.0), (2, 0.8), (3, 0.7)]
    assert store.runs(0) == ["a", "b"]


def test_history_and_generations(store):
    store.add(
        [rec(1, 0.9, gen=2), rec(1, 0.6, metric="attention_alignment_score", gen=2), rec(1, 1.1, gen=0)]
    )
    assert store.generations() == [0, 2]
    assert store.history(2) == {"attention_alignment_score": [(1, 0.6)], "val_loss": [(1, 0.9)]}


def test_nonfinite_values_round_trip(store):
    store.add([rec(1, math.nan), rec(2, math.inf), rec(3, -math.inf)])
    (s1, v1), (s2, v2), (s3, v3) = store.curve(0, "val_loss")
    assert math.isnan(v1) and v2 == math.inf and v3 == -math.inf


def test_wal_mode_and_reopen(tmp_path):
    path = tmp_path / "m.db"
    with MetricsStore(path) as s:
        s.add([rec(1, 0.9)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with MetricsStore(path) as s:
        assert s.curve(0, "val_loss") == [(1, 0.9)]
        assert s.add([rec(1, 0.9)]) == 0


def test_survives_kill_9_of_the_writer(tmp_path):
    """A writer process killed mid-life leaves every committed batch readable."""
    path = tmp_path / "m.db"
    code = (
        "import os, signal\n"
        "from ttsops.smart_tuner.trainer.metrics_store import MetricsStore, MetricRecord\n"
        f"s = MetricsStore({str(path)!r})\n"
        "s.add([MetricRecord('r', 0, i, 'val_loss', 1.0 / (i + 1), 100.0 + i, 101.0 + i) for i in range(50)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    with MetricsStore(path) as s:
        curve = s.curve(0, "val_loss")
    assert len(curve) == 50 and curve[-1] == (49, pytest.approx(1 / 50))


def test_latency_stats(store):
    store.add([rec(i, 1.0, ts=0.0, received=0.1 * (i + 1)) for i in range(10)])
    stats = store.latency_stats()
    assert stats["count"] == 10
    assert stats["p50"] == pytest.approx(0.5)
    assert stats["p95"] == pytest.approx(1.0)
    assert stats["max"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("latencies", "p50", "p95", "max_"),
    [
        ([1.0], 1.0, 1.0, 1.0),
        ([3.0, 1.0, 2.0], 2.0, 3.0, 3.0),
        ([0.0] * 19 + [9.0], 0.0, 0.0, 9.0),
        ([0.0] * 18 + [5.0, 9.0], 0.0, 5.0, 9.0),
    ],
)
def test_latency_summary_table(latencies, p50, p95, max_):
    s = latency_summary(latencies)
    assert (s["p50"], s["p95"], s["max"], s["count"]) == (p50, p95, max_, len(latencies))


def test_latency_summary_empty_is_nan():
    s = latency_summary([])
    assert s["count"] == 0 and math.isnan(s["p50"]) and math.isnan(s["max"])
