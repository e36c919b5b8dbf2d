"""LogWatcher pieces that need no MLflow store: the factory, the follow loop, TensorBoard files
written by TensorBoard's own writer (v1 simple_value and v2 tensor scalars, images skipped).
The shared backend contract is in tests/integration/smart_tuner/test_watcher_contract.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from ttsops.errors import ConfigError, TunerError
from ttsops.smart_tuner.trainer.log_watcher import TensorboardWatcher, follow, make_watcher
from ttsops.smart_tuner.trainer.metrics_store import MetricRecord


def write_events(log_dir, events: list[tuple[int, summary_pb2.Summary.Value]], wall_time=1000.0):
    w = EventFileWriter(str(log_dir))
    for step, value in events:
        w.add_event(
            event_pb2.Event(wall_time=wall_time + step, step=step, summary=summary_pb2.Summary(value=[value]))
        )
    w.flush()
    return w


def simple(tag, x):
    return summary_pb2.Summary.Value(tag=tag, simple_value=x)


def tensor(tag, arr):
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(arr))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "mlflow", "run_id": "r"}, "tracking_uri and run_id"),
        ({"source": "mlflow", "tracking_uri": "sqlite:///x.db"}, "tracking_uri and run_id"),
        ({"source": "tensorboard"}, "log_dir"),
        ({"source": "wandb", "log_dir": "x"}, "valid: mlflow, tensorboard"),
    ],
)
def test_make_watcher_checks_its_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_watcher(generation=0, **kwargs)


def test_tensorboard_scalars_v1_and_v2_images_skipped(tmp_path):
    img = summary_pb2.Summary.Value(tag="alignment", image=summary_pb2.Summary.Image(height=1, width=1))
    w = write_events(
        tmp_path,
        [
            (1, simple("val_loss", 0.5)),
            (1, tensor("mcd", np.float32(7.25))),
            (1, img),
            (2, tensor("hist", np.ones(3, np.float32))),
            (2, tensor("label", np.array(b"txt", dtype=object))),
        ],
    )
    watcher = make_watcher("tensorboard", generation=4, log_dir=tmp_path, clock=lambda: 5000.0)
    got = watcher.poll_once()
    w.close()
    assert sorted((r.metric, r.step, r.value) for r in got) == [("mcd", 1, 7.25), ("val_loss", 1, 0.5)]
    assert all(r.generation == 4 and r.received == 5000.0 and r.timestamp == 1001.0 for r in got)
    assert watcher.latency_stats()["max"] == 3999.0


def test_tensorboard_missing_dir_then_new_files_in_subdirs(tmp_path):
    log_dir = tmp_path / "logs"
    watcher = TensorboardWatcher(log_dir, 0)
    assert watcher.poll_once() == []  # train.py has not started yet
    write_events(log_dir, [(1, simple("val_loss", 1.0))]).close()
    assert [r.step for r in watcher.poll_once()] == [1]
    write_events(log_dir / "restart1", [(2, simple("val_loss", 0.9))]).close()  # a restarted trainer
    assert [r.step for r in watcher.poll_once()] == [2]
    assert watcher.poll_once() == []


def test_tensorboard_state_dict_skips_what_was_seen(tmp_path):
    w = write_events(tmp_path, [(1, simple("val_loss", 1.0)), (2, simple("val_loss", 0.9))])
    first = TensorboardWatcher(tmp_path, 0)
    assert len(first.poll_once()) == 2
    state = first.state_dict()
    w.add_event(
        event_pb2.Event(
            wall_time=1003.0, step=3, summary=summary_pb2.Summary(value=[simple("val_loss", 0.8)])
        )
    )
    w.flush()
    w.close()
    resumed = TensorboardWatcher(tmp_path, 0)
    resumed.load_state_dict(state)
    assert [(r.step, r.value) for r in resumed.poll_once()] == [(3, pytest.approx(0.8))]
    with pytest.raises(TunerError, match="not tensorboard"):
        resumed.load_state_dict({"source": "mlflow"})


class ScriptedWatcher:
    """Our own LogWatcher protocol, scripted: returns batches, raises once, then nothing."""

    def __init__(self, script):
        self.script = list(script)
        self.polls = 0

    def poll_once(self):
        self.polls += 1
        item = self.script.pop(0) if self.script else []
        if isinstance(item, Exception):
            raise item
        return item


def test_follow_delivers_batches_survives_errors_and_stops(caplog):
    r = MetricRecord("run", 0, 1, "val_loss", 1.0, 1.0, 2.0)
    watcher = ScriptedWatcher([[r], TunerError("server away"), [], [r, r]])
    got: list[list[MetricRecord]] = []
    stop = threading.Event()

    def sink(batch):
        got.append(batch)
        if len(got) == 2:
            stop.set()

    t0 = time.monotonic()
    thread = threading.Thread(target=follow, args=(watcher, sink, stop, 0.01))
    thread.start()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - t0 < 5
    assert got == [[r], [r, r]] and watcher.polls == 4
    assert "server away" in caplog.text
