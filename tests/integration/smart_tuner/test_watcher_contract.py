"""One contract for every LogWatcher backend (STYLE 26, like Optuna's StorageTestCase).

The writer side is the real thing: ``MlflowClient.log_metric`` against an embedded SQLite store,
an ``mlflow server`` subprocess over HTTP, and a PostgreSQL backend store; ``SummaryWriter`` from
``torch.utils.tensorboard`` for TensorBoard. Each ``Test*`` class below runs every test of
``WatcherContract`` against its backend.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, fresh_postgres_database
from ttsops.errors import TunerError
from ttsops.smart_tuner.trainer.log_watcher import follow, make_watcher
from ttsops.smart_tuner.trainer.metrics_store import MetricRecord, MetricsStore, latency_summary

logger = logging.getLogger(__name__)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_SKIP = (
    "PostgreSQL not reachable at 127.0.0.1:5432 (start it, e.g. `service postgresql start`, "
    "trust auth, database 'test') to run the PostgreSQL-backed MLflow contract"
)


# --- writers ---------------------------------------------------------------------------------
class MlflowBackend:
    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name("watch")
        exp_id = exp.experiment_id if exp else self.client.create_experiment("watch")
        self.run_id = self.client.create_run(exp_id).info.run_id

    def log(self, metric: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, metric, value, step=step)

    def flush(self) -> None:
        pass

    def watcher(self, **kw):
        return make_watcher("mlflow", tracking_uri=self.tracking_uri, run_id=self.run_id, **kw)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TensorboardBackend:
    def __init__(self, log_dir: Path) -> None:
        import torch
        from torch.utils.tensorboard import SummaryWriter

        torch.set_num_threads(1)
        self.log_dir = log_dir
        self.writer = SummaryWriter(str(log_dir))

    def log(self, metric: str, value: float, step: int) -> None:
        self.writer.add_scalar(metric, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def watcher(self, **kw):
        return make_watcher("tensorboard", log_dir=self.log_dir, **kw)

    def close(self) -> None:
        self.writer.close()


# --- shared contract -------------------------------------------------------------------------
def triples(records: list[MetricRecord]) -> list[tuple[str, int, float]]:
    return sorted((r.metric, r.step, r.value) for r in records)


def approx(items: list[tuple[str, int, float]]):
    return [(m, s, pytest.approx(v, rel=1e-6)) for m, s, v in items]  # TensorBoard keeps float32


class WatcherContract:
    @pytest.fixture
    def backend(self):  # pragma: no cover - every subclass provides one
        raise NotImplementedError

    def test_nothing_logged_yet(self, backend):
        assert backend.watcher(generation=0).poll_once() == []

    def test_first_poll_delivers_everything_logged_so_far(self, backend):
        for step, v in ((10, 1.5), (20, 1.25), (30, 1.0)):
            backend.log("val_loss", v, step)
        backend.log("attention_alignment_score", 0.5, 30)
        backend.flush()
        got = backend.watcher(generation=3).poll_once()
        assert triples(got) == approx(
            [
                ("attention_alignment_score", 30, 0.5),
                ("val_loss", 10, 1.5),
                ("val_loss", 20, 1.25),
                ("val_loss", 30, 1.0),
            ]
        )
        assert {r.generation for r in got} == {3} and all(r.run_id for r in got)

    def test_later_polls_deliver_only_what_is_new(self, backend):
        w = backend.watcher(generation=0)
        backend.log("val_loss", 2.0, 1)
        backend.flush()
        assert triples(w.poll_once()) == [("val_loss", 1, 2.0)]
        assert w.poll_once() == []
        backend.log("val_loss", 1.5, 2)
        backend.log("learning_rate", 1e-3, 2)
        backend.flush()
        assert triples(w.poll_once()) == approx([("learning_rate", 2, 1e-3), ("val_loss", 2, 1.5)])
        backend.log("learning_rate", 1e-3, 3)  # same value, new step: still new
        backend.flush()
        assert triples(w.poll_once()) == approx([("learning_rate", 3, 1e-3)])
        assert w.poll_once() == []

    def test_metric_map_renames_and_passes_others_through(self, backend):
        backend.log("loss/val", 0.75, 5)
        backend.log("grad_norm", 3.0, 5)
        backend.flush()
        got = backend.watcher(generation=0, metric_map={"loss/val": "val_loss"}).poll_once()
        assert triples(got) == [("grad_norm", 5, 3.0), ("val_loss", 5, 0.75)]

    def test_timestamps_are_the_writers_received_is_the_watchers_clock(self, backend):
        before = time.time()
        backend.log("val_loss", 1.0, 1)
        backend.flush()
        after = time.time()
        got = backend.watcher(generation=0, clock=lambda: after + 100.0).poll_once()
        (r,) = got
        assert before - 1.0 <= r.timestamp <= after + 1.0  # MLflow keeps milliseconds
        assert r.received == after + 100.0 and r.latency == pytest.approx(r.received - r.timestamp)

    def test_state_dict_lets_a_resumed_watcher_skip_what_was_seen(self, backend):
        w = backend.watcher(generation=1)
        for step in (1, 2):
            backend.log("val_loss", 1.0 / step, step)
        backend.flush()
        assert len(w.poll_once()) == 2
        state = json.loads(json.dumps(w.state_dict()))  # the tuner keeps it as JSON
        backend.log("val_loss", 0.25, 3)
        backend.flush()
        resumed = backend.watcher(generation=1)
        resumed.load_state_dict(state)
        assert triples(resumed.poll_once()) == [("val_loss", 3, 0.25)]
        assert resumed.poll_once() == []

    def test_nan_is_delivered_once(self, backend):
        w = backend.watcher(generation=0)
        backend.log("val_loss", math.nan, 1)
        backend.flush()
        (r,) = w.poll_once()
        assert math.isnan(r.value)
        assert w.poll_once() == []

    def test_a_step_logged_again_by_a_retried_trainer_is_delivered(self, backend):
        w = backend.watcher(generation=0)
        backend.log("val_loss", 1.0, 5)
        backend.flush()
        assert len(w.poll_once()) == 1
        time.sleep(0.005)  # the retry logs later (MLflow timestamps are milliseconds)
        backend.log("val_loss", 0.9, 5)
        backend.log("val_loss", 0.8, 6)
        backend.flush()
        assert triples(w.poll_once()) == approx([("val_loss", 5, 0.9), ("val_loss", 6, 0.8)])

    def test_follow_in_real_time_into_the_store(self, backend, tmp_path):
        store = MetricsStore(tmp_path / "metrics.db")
        stop = threading.Event()
        thread = threading.Thread(target=follow, args=(backend.watcher(generation=2), store.add, stop, 0.05))
        thread.start()
        try:
            for step in range(1, 7):
                backend.log("val_loss", 1.0 / step, step)
                backend.flush()
                time.sleep(0.05)
            deadline = time.monotonic() + 20
            while len(store.curve(2, "val_loss")) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
        curve = store.curve(2, "val_loss")
        stats = store.latency_stats()
        store.close()
        logger.info(
            "%s: watcher latency p50 %.3f s p95 %.3f s max %.3f s",
            type(self).__name__,
            stats["p50"],
            stats["p95"],
            stats["max"],
        )
        assert [s for s, _ in curve] == [1, 2, 3, 4, 5, 6]
        assert [v for _, v in curve] == pytest.approx([1.0 / s for s in range(1, 7)], rel=1e-6)
        assert stats["max"] < 2.0  # the goal for log-to-decision


class MlflowOnly:
    def test_unknown_run_is_one_clear_error(self, backend):
        w = make_watcher("mlflow", tracking_uri=backend.tracking_uri, run_id="0" * 32, generation=0)
        with pytest.raises(TunerError, match="run 0000"):
            w.poll_once()

    def test_run_status(self, backend):
        assert backend.watcher(generation=0).run_status() == "RUNNING"


# --- backends --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_sqlite_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_sqlite') / 'mlflow.db'}"


def _wait_healthy(proc: subprocess.Popen, uri: str, log: Path, timeout_s: float = 180) -> None:
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"mlflow server not healthy after {timeout_s:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def mlflow_http_uri(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (one worker), stopped with its process group."""
    d = tmp_path_factory.mktemp("mlflow_http")
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
           "--default-artifact-root", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(d / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        _wait_healthy(proc, uri, d / "server.log")
        logger.info("mlflow server healthy after %.1f s", time.monotonic() - started)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def mlflow_pg_uri():
    """A fresh PostgreSQL database for MLflow's backend store, dropped afterwards."""
    with fresh_postgres_database("ttsops_watch", "the PostgreSQL-backed MLflow contract") as url:
        yield url


class TestMlflowSqlite(WatcherContract, MlflowOnly):
    @pytest.fixture
    def backend(self, mlflow_sqlite_uri):
        b = MlflowBackend(mlflow_sqlite_uri)
        yield b
        b.close()


@pytest.mark.slow
class TestMlflowHttp(WatcherContract, MlflowOnly):
    @pytest.fixture
    def backend(self, mlflow_http_uri):
        b = MlflowBackend(mlflow_http_uri)
        yield b
        b.close()


@pytest.mark.slow
@pytest.mark.postgres
class TestMlflowPostgres(WatcherContract, MlflowOnly):
    @pytest.fixture
    def backend(self, mlflow_pg_uri):
        b = MlflowBackend(mlflow_pg_uri)
        yield b
        b.close()


class TestTensorboard(WatcherContract):
    @pytest.fixture
    def backend(self, tmp_path):
        b = TensorboardBackend(tmp_path / "tb")
        yield b
        b.close()


def test_latency_summary_of_watcher_records_matches_store(tmp_path):
    """The watcher's own latency log and the store's agree on the same records."""
    recs = [MetricRecord("r", 0, i, "val_loss", 1.0, 10.0, 10.0 + 0.1 * i) for i in range(5)]
    with MetricsStore(tmp_path / "m.db") as store:
        store.add(recs)
        assert store.latency_stats() == pytest.approx(latency_summary([r.latency for r in recs]))
