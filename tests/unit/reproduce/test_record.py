"""What a run record must hold, what it says, and where a rerun stops (no MLflow: plain dicts)."""

from __future__ import annotations

import pytest

from ttsops.errors import ReproduceError
from ttsops.infra.tracking import Tag
from ttsops.reproduce.record import parse_record
from ttsops.reproduce.rerun import stop_point

TAGS = {Tag.GIT_COMMIT: "a" * 40, Tag.DATASET: "/data/ds", Tag.DATASET_FINGERPRINT: "f" * 16,
        Tag.DATASET_VERSION: "8fa19dd131b73445475bca0431fbd8d3"}
PARAMS = {"epochs": "2", "learning_rate": "0.001", "tuner.learning_rate": "0.001"}
CURVES = {"val_loss": {3: 1.0, 6: 0.9}, "train_loss": {1: 2.0, 7: 1.5}}


def record(tags=None, params=None, config="training: {}\n", curves=None, status="FINISHED"):
    return parse_record("r1", "0", "name", status, PARAMS if params is None else params,
                        {**TAGS, **(tags or {})}, config, CURVES if curves is None else curves)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tags": {Tag.GIT_COMMIT: ""}}, "run r1: no tag git_commit: not a run of ttsops train.py"),
        ({"tags": {Tag.DATASET_FINGERPRINT: "", Tag.DATASET: ""}},
         "run r1: no tag dataset, dataset_fingerprint: not a run of ttsops train.py"),
        ({"config": None}, "run r1: no config.yaml artifact: not a run of ttsops train.py"),
        ({"params": {"tuner.lr": "1"}}, "run r1: no hparams among its params: not a run of ttsops train.py"),
    ],
)
def test_a_run_without_what_a_rerun_needs_is_refused_in_one_line(kwargs, message):
    with pytest.raises(ReproduceError) as e:
        record(**kwargs)
    assert str(e.value) == message


def test_what_a_record_says():
    r = record({Tag.TORCH_THREADS: "2", Tag.DEVICE: "cuda:0 (NVIDIA H200, CUDA 12.8, cuDNN 91002)",
                Tag.GIT_DIRTY: "0123456789abcdef: 2 files: a.py, b.py", Tag.TRAIN_STATUS: "stopped",
                Tag.FINAL_STEP: "7"})
    assert r.hparams == {"epochs": "2", "learning_rate": "0.001"}  # the tuner's own params left out
    assert (r.threads, r.device_type, r.dirty, r.final_step, r.finished) == (2, "cuda", "0123456789abcdef", 7, False)
    assert r.source is None and r.validated_at(6) and not r.validated_at(7)
    old = record(status="FINISHED")  # recorded before train.py tagged how it ended
    assert (old.final_step, old.finished, old.threads, old.device_type, old.dirty) == (7, True, None, None, None)


def test_the_source_of_a_warm_start():
    r = record({Tag.TRAIN_RESTART_MODE: "warm_start", Tag.TRAIN_WARM_START_SOURCE: "/s/best_model.pt",
                Tag.SOURCE_RUN: "p1", Tag.SOURCE_STEP: "6", Tag.SOURCE_WEIGHTS: "ab" * 32})
    assert r.source is not None and (r.source.mode, r.source.path, r.source.run_id, r.source.step) == (
        "warm_start", "/s/best_model.pt", "p1", 6)
    unknown = record({Tag.TRAIN_RESTART_MODE: "resume", Tag.SOURCE_RUN: "unknown"})
    assert unknown.source is not None and unknown.source.run_id is None and unknown.source.weights is None


@pytest.mark.parametrize(
    ("tags", "at_step", "expected"),
    [
        ({Tag.TRAIN_STATUS: "finished", Tag.FINAL_STEP: "7"}, None, (None, False)),  # trains all its epochs
        ({Tag.TRAIN_STATUS: "finished", Tag.FINAL_STEP: "7"}, 7, (None, False)),
        ({Tag.TRAIN_STATUS: "finished", Tag.FINAL_STEP: "7"}, 6, (6, True)),  # to a parent's checkpoint at 6
        ({Tag.TRAIN_STATUS: "finished", Tag.FINAL_STEP: "7"}, 5, (5, False)),
        ({Tag.TRAIN_STATUS: "stopped", Tag.FINAL_STEP: "6"}, None, (6, True)),  # stopped after validating 6
        ({Tag.TRAIN_STATUS: "stopped", Tag.FINAL_STEP: "4"}, None, (4, False)),
    ],
)
def test_a_rerun_stops_where_the_original_did(tags, at_step, expected):
    assert stop_point(record(tags), at_step) == expected
