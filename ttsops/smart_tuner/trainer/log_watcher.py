"""LogWatcher: follows a running trainer's metrics and turns them into one stream of MetricRecord.

Two backends, one interface (``poll_once() -> list[MetricRecord]`` with only what is new):

* ``MlflowWatcher`` reads one MLflow run through ``MlflowClient(tracking_uri=...)`` (never the
  fluent API: several watchers may live in one process). Any tracking URI works: an embedded store
  (``sqlite:///...``, ``postgresql://...``) or an ``mlflow server`` (``http://...``). Each poll is one
  ``get_run`` (the latest value of every key, with its step and timestamp) plus one
  ``get_metric_history`` per key whose latest value changed. Caveat: MLflow's "latest" is the value
  at the largest step, so when a retried train.py logs steps *below* the largest one again, they are
  picked up once it passes that step (they carry newer timestamps, so nothing is lost).
* ``TensorboardWatcher`` reads ``events.out.tfevents.*`` files under a log dir (new files and
  sub-directories appear as train.py restarts) with TensorBoard's ``EventFileLoader``, which keeps
  its offset, so each poll reads only the bytes written since the last one. Scalars written by
  ``torch.utils.tensorboard.SummaryWriter.add_scalar`` (``simple_value``) and TF2-style scalar
  tensors are both understood; images, audio and histograms are skipped.

Names go through ``metric_map`` (trainer's name -> ttsops name; names not in the map pass
through unchanged). Each record carries the trainer's timestamp and the watcher's ``received``
time (from the injected clock); the latency of every poll is logged at DEBUG and summarised by
``latency_stats()``. ``state_dict()`` / ``load_state_dict()`` say what has been seen, so a
resumed tuner does not deliver it again (MetricsStore would drop the duplicates anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from ttsops.errors import ConfigError, TunerError
from ttsops.smart_tuner.trainer.metrics_store import MetricRecord, latency_summary

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
_LATENCY_WINDOW = 2000  # latencies kept for latency_stats()


class LogWatcher(Protocol):
    def poll_once(self) -> list[MetricRecord]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def latency_stats(self) -> dict[str, float]: ...


class _LatencyMeter:
    """Remembers recent latencies and logs one line per poll that delivered something."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.recent: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    def observe(self, records: list[MetricRecord], poll_s: float) -> None:
        if not records:
            return
        lat = [r.latency for r in records]
        self.recent.extend(lat)
        logger.debug(
            "%s: %d new records, latency max %.3f s min %.3f s, poll took %.3f s",
            self.name,
            len(records),
            max(lat),
            min(lat),
            poll_s,
        )

    def stats(self) -> dict[str, float]:
        return latency_summary(list(self.recent))


# --- MLflow ------------------------------------------------------------------------------------
class MlflowWatcher:
    """New metric values of one MLflow run, any tracking URI (sqlite, postgresql, http)."""

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        generation: int,
        *,
        metric_map: dict[str, str] | None = None,
        clock: Clock = time.time,
        client: Any | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient  # heavy import, only when MLflow is watched

        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.generation = generation
        self.metric_map = dict(metric_map or {})
        self._clock = clock
        self._client = client or MlflowClient(tracking_uri=tracking_uri)
        # per key: (latest step, latest timestamp ms, latest value) as get_run last showed it
        self._latest: dict[str, tuple[int, int, float | str]] = {}
        # per key: newest timestamp (ms) delivered, and the (step, value) pairs delivered at it
        self._mark: dict[str, tuple[int, set[tuple[int, float | str]]]] = {}
        self._meter = _LatencyMeter(f"mlflow watcher run {run_id}")

    def poll_once(self) -> list[MetricRecord]:
        started = time.perf_counter()
        latest = self._latest_metrics()
        records: list[MetricRecord] = []
        for key in sorted(k for k, sig in latest.items() if self._latest.get(k) != sig):
            records.extend(self._new_records(key, self._history(key)))
            self._latest[key] = latest[key]  # only once its history was read
        records.sort(key=lambda r: (r.timestamp, r.step, r.metric))
        self._meter.observe(records, time.perf_counter() - started)
        return records

    def run_status(self) -> str:
        """MLflow status of the watched run (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED)."""
        return str(self._get_run().info.status)

    def _get_run(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(self.run_id)
        except MlflowException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TunerError(f"mlflow {self.tracking_uri}: run {self.run_id}: {msg}") from None

    def _latest_metrics(self) -> dict[str, tuple[int, int, float | str]]:
        latest: dict[str, tuple[int, int, float | str]] = {}
        for m in self._get_run().data.to_proto().metrics:  # the public way to see step+timestamp
            latest[m.key] = (int(m.step), int(m.timestamp), _vkey(m.value))
        return latest

    def _history(self, key: str) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return list(self._client.get_metric_history(self.run_id, key))
        except MlflowException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TunerError(f"mlflow {self.tracking_uri}: run {self.run_id}: metric {key}: {msg}") from None

    def _new_records(self, key: str, history: list[Any]) -> list[MetricRecord]:
        mark_ts, at_mark = self._mark.get(key, (-1, set()))
        received = self._clock()
        fresh = []
        for m in history:
            ts, item = int(m.timestamp), (int(m.step), _vkey(m.value))
            if ts < mark_ts or (ts == mark_ts and item in at_mark):
                continue
            fresh.append(m)
        if not fresh:
            return []
        new_ts = max(int(m.timestamp) for m in fresh)
        if new_ts > mark_ts:
            mark_ts, at_mark = new_ts, set()
        at_mark |= {(int(m.step), _vkey(m.value)) for m in fresh if int(m.timestamp) == mark_ts}
        self._mark[key] = (mark_ts, at_mark)
        name = self.metric_map.get(key, key)
        return [
            MetricRecord(
                self.run_id,
                self.generation,
                int(m.step),
                name,
                float(m.value),
                int(m.timestamp) / 1000.0,
                received,
            )
            for m in fresh
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "source": "mlflow",
            "run_id": self.run_id,
            "mark": {k: [ts, sorted(items, key=str)] for k, (ts, items) in self._mark.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("source") != "mlflow" or state.get("run_id") != self.run_id:
            raise TunerError(
                f"watcher state is for {state.get('source')} run {state.get('run_id')}, "
                f"not mlflow run {self.run_id}"
            )
        self._mark = {
            k: (int(ts), {(int(s), _vkey(v)) for s, v in items}) for k, (ts, items) in state["mark"].items()
        }
        self._latest = {}  # re-read every key's history once, the marks filter what was seen

    def latency_stats(self) -> dict[str, float]:
        return self._meter.stats()


def _vkey(value: float) -> float | str:
    """A value usable in sets and comparisons: NaN != NaN would make every NaN look new."""
    v = float(value)
    return "nan" if v != v else v


# --- TensorBoard -------------------------------------------------------------------------------
_EVENT_GLOB = "events.out.tfevents.*"


class _EventFile:
    """Incremental reader of one event file; counts events so a resumed watcher can skip them."""

    def __init__(self, path: Path, skip: int = 0) -> None:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        self.path = path
        self.loader = EventFileLoader(str(path))
        self.consumed = 0
        self._skip = skip

    def new_events(self) -> list[Any]:
        out = []
        for event in self.loader.Load():
            self.consumed += 1
            if self.consumed > self._skip:
                out.append(event)
        return out


class TensorboardWatcher:
    """New scalars from every event file under ``log_dir`` (recursively)."""

    def __init__(
        self,
        log_dir: str | Path,
        generation: int,
        *,
        metric_map: dict[str, str] | None = None,
        clock: Clock = time.time,
        run_id: str | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.generation = generation
        self.metric_map = dict(metric_map or {})
        self.run_id = run_id or str(self.log_dir)
        self._clock = clock
        self._files: dict[str, _EventFile] = {}
        self._skip: dict[str, int] = {}  # from load_state_dict, applied when a file is opened
        self._meter = _LatencyMeter(f"tensorboard watcher {self.log_dir}")

    def poll_once(self) -> list[MetricRecord]:
        started = time.perf_counter()
        records: list[MetricRecord] = []
        for path in sorted(self.log_dir.rglob(_EVENT_GLOB)) if self.log_dir.is_dir() else []:
            key = str(path.relative_to(self.log_dir))
            reader = self._files.get(key)
            if reader is None:
                reader = self._files[key] = _EventFile(path, self._skip.get(key, 0))
            events = reader.new_events()
            received = self._clock()
            for event in events:
                records.extend(self._scalars(event, received))
        records.sort(key=lambda r: (r.timestamp, r.step, r.metric))
        self._meter.observe(records, time.perf_counter() - started)
        return records

    def _scalars(self, event: Any, received: float) -> list[MetricRecord]:
        if not event.HasField("summary"):
            return []
        out = []
        for v in event.summary.value:
            value = _scalar_value(v)
            if value is None:
                continue
            out.append(
                MetricRecord(
                    self.run_id,
                    self.generation,
                    int(event.step),
                    self.metric_map.get(v.tag, v.tag),
                    value,
                    float(event.wall_time),
                    received,
                )
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        consumed = dict(self._skip)
        consumed.update({k: f.consumed for k, f in self._files.items()})
        return {"source": "tensorboard", "log_dir": str(self.log_dir), "consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("source") != "tensorboard":
            raise TunerError(f"watcher state is for {state.get('source')}, not tensorboard")
        self._files = {}
        self._skip = {str(k): int(v) for k, v in state["consumed"].items()}

    def latency_stats(self) -> dict[str, float]:
        return self._meter.stats()


def _scalar_value(v: Any) -> float | None:
    """A summary value's float if it is a scalar (v1 ``simple_value`` or a 0-d tensor)."""
    kind = v.WhichOneof("value")
    if kind == "simple_value":
        return float(v.simple_value)
    if kind == "tensor" and not v.tensor.tensor_shape.dim:
        from tensorboard.util import tensor_util

        arr = tensor_util.make_ndarray(v.tensor)
        if arr.dtype.kind in "fiu":
            return float(arr.item())
    return None


# --- factory and loop ----------------------------------------------------------------------------
def make_watcher(
    source: Literal["mlflow", "tensorboard"],
    *,
    generation: int,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    log_dir: str | Path | None = None,
    metric_map: dict[str, str] | None = None,
    clock: Clock = time.time,
) -> MlflowWatcher | TensorboardWatcher:
    """The watcher the adapter's ``metrics_source`` names, with its required arguments checked."""
    if source == "mlflow":
        if not tracking_uri or not run_id:
            raise ConfigError(
                f"metrics_source mlflow needs tracking_uri and run_id (got {tracking_uri!r}, {run_id!r})"
            )
        return MlflowWatcher(tracking_uri, run_id, generation, metric_map=metric_map, clock=clock)
    if source == "tensorboard":
        if log_dir is None:
            raise ConfigError("metrics_source tensorboard needs log_dir")
        return TensorboardWatcher(log_dir, generation, metric_map=metric_map, clock=clock, run_id=run_id)
    raise ConfigError(f"metrics_source {source!r}: unknown (valid: mlflow, tensorboard)")


def follow(
    watcher: LogWatcher,
    on_records: Callable[[list[MetricRecord]], None],
    stop: threading.Event,
    interval_s: float = 1.0,
) -> None:
    """Poll until ``stop`` is set, handing every non-empty batch to ``on_records``.

    Waits on ``stop.wait(interval_s)`` (not ``time.sleep``) so setting the event ends it at once.
    A TunerError from a poll (server briefly away) is logged and the next poll tries again.
    """
    while not stop.is_set():
        try:
            records = watcher.poll_once()
        except TunerError as e:
            logger.warning("watcher poll failed, retrying in %.1f s: %s", interval_s, e)
            records = []
        if records:
            on_records(records)
        stop.wait(interval_s)
