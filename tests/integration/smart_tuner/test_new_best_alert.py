"""The new-best alert carries the generation's newest alignment image and audio: read back from the
generation's MLflow run (a real SQLite store) and delivered by the real AlertManager to a local HTTP
server standing in for the Telegram Bot API and a JSON webhook."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests import alert_stub
from tests.alert_stub import TOKEN, multipart, telegram_cfg
from tests.integration.smart_tuner.fixtures.tuner_testkit import (
    foreign_config,
    mlflow_client,
    real_config,
    study_runs,
    write_config,
)
from ttsops.infra.plotting import plot_alignment, plot_mels
from ttsops.smart_tuner.study.tracking import StudyTracking
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.tuner import Tuner
from ttsops.train.adapter import Tacotron2Adapter
from ttsops.train.tracking import Tracker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOOK_PATH = "/hooks/tuner-alerts-0123456789"
FAST = RunnerConfig(poll_s=0.1, heartbeat_s=1.0)


def _alerts(stub: alert_stub.Stub) -> dict:
    """Telegram and the JSON webhook, both on the stub; no rate limit."""
    return {**telegram_cfg(stub), "webhook_url": stub.url + HOOK_PATH, "min_interval_s": 0.0}


def _telegram(stub: alert_stub.Stub, method: str) -> list[dict]:
    return [r for r in stub.requests if r["path"] == f"/bot{TOKEN}/{method}"]


def _new_best_hook(stub: alert_stub.Stub) -> dict:
    hooks = [json.loads(r["body"]) for r in stub.requests if r["path"] == HOOK_PATH]
    (payload,) = [p for p in hooks if p["event"] == "new_best"]
    return payload


# --- reading the samples back (StudyTracking.latest_samples) ------------------------------------
def _log_step(tracker: Tracker, step: int, *, free_running: bool = True) -> None:
    """What train.py's validation logs at ``step`` (ttsops.train.validate.log_samples)."""
    rng = np.random.default_rng(step)
    align = rng.random((6, 4))
    mel = rng.random((8, 12))
    png, mel_png = plot_alignment(align, f"step {step}"), plot_mels(mel, mel)
    tracker.log_samples(step, "teacher_forced", png, mel_png, None, 22050)
    if free_running:
        wav = (0.1 * np.sin(np.linspace(0, 40 * step, 2205))).astype(np.float32)
        tracker.log_samples(step, "free_running", png, mel_png, wav, 22050)


def test_latest_samples_reads_the_newest_step_and_never_raises(tmp_path, mlflow_uri, caplog):
    from mlflow import MlflowClient

    caplog.set_level(logging.WARNING, logger="ttsops.smart_tuner.study.tracking")
    tracking = StudyTracking(
        MlflowClient(tracking_uri=mlflow_uri),
        experiment_name="alerts",
        study_name="s",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
    )
    run_id = tracking.open_child(0, {}, mode="fresh", source="none", reason="test")
    samples = tmp_path / "gen" / "samples"
    tracker = Tracker(mlflow_uri, "alerts", run_id, tmp_path / "gen" / "tb", samples, tensorboard=False)
    for step in (3, 12):
        _log_step(tracker, step)
    _log_step(tracker, 100, free_running=False)  # the newest step has no free-running sample
    newest = samples / "step_00000012"

    got = tracking.latest_samples(run_id)
    assert got == {
        "alignment_png": (newest / "free_running_alignment.png").read_bytes(),
        "audio_wav": (newest / "free_running.wav").read_bytes(),
    }
    assert got["alignment_png"].startswith(PNG_MAGIC) and got["audio_wav"][:4] == b"RIFF"
    assert got["alignment_png"] != (samples / "step_00000003" / "free_running_alignment.png").read_bytes()
    assert not [r for r in caplog.records if r.name == "ttsops.smart_tuner.study.tracking"]

    cap = len(got["audio_wav"]) + 1  # the image is bigger than the short clip
    assert len(got["alignment_png"]) > cap
    assert tracking.latest_samples(run_id, max_bytes=cap) == {"audio_wav": got["audio_wav"]}
    assert "free_running_alignment.png is" in caplog.text and f"(over {cap}): not attached" in caplog.text

    caplog.clear()  # a trainer that logs no samples (the foreign trainers)
    bare = tracking.open_child(1, {}, mode="fresh", source="none", reason="test")
    assert tracking.latest_samples(bare) == {}
    assert "no usable free_running_alignment.png or free_running.wav" in caplog.text

    caplog.clear()  # a run the store does not know: a warning, never an exception
    assert tracking.latest_samples("0" * 32) == {}
    assert "validation samples not read" in caplog.text


# --- through the tuner ------------------------------------------------------------------------------
@pytest.mark.usefixtures("mlflow_uri")
def test_new_best_alert_without_samples_is_sent_without_attachments(tmp_path, stub, caplog):
    """The foreign trainer logs no sample artifacts: the alert still goes out, text only."""
    caplog.set_level(logging.WARNING, logger="ttsops.smart_tuner.study.tracking")
    data = foreign_config(tmp_path, n_trials=1, epochs=2, extra={"monitoring": {"alerts": _alerts(stub)}})
    _, cfg = write_config(tmp_path, data)
    assert Tuner(cfg, runner_cfg=FAST, trainer=Tacotron2Adapter(cfg.adapter)).run().status == "finished"
    texts = [json.loads(r["body"])["text"] for r in _telegram(stub, "sendMessage")]
    assert any("new best" in t for t in texts), texts
    assert _telegram(stub, "sendPhoto") == [] and _telegram(stub, "sendAudio") == []
    hook = _new_best_hook(stub)
    assert hook["has_image"] is False and hook["has_audio"] is False
    assert "the alert goes out without it" in caplog.text


@pytest.mark.slow  # one generation of the real train.py: about 15 s here
@pytest.mark.usefixtures("mlflow_uri")
def test_new_best_alert_carries_the_real_trainers_alignment_and_audio(
    tmp_path, tiny_corpus, stub
):
    data = real_config(
        tmp_path, tiny_corpus, n_trials=1, epochs=2, extra={"monitoring": {"alerts": _alerts(stub)}}
    )
    _, cfg = write_config(tmp_path, data)
    assert Tuner(cfg, runner_cfg=FAST, trainer=Tacotron2Adapter(cfg.adapter)).run().status == "finished"

    # what train.py logged: one samples/step_* directory per validation (two epochs: two)
    _, (child,) = study_runs(cfg)
    client = mlflow_client(cfg)
    run_id = child.info.run_id
    steps = sorted(a.path for a in client.list_artifacts(run_id, "samples") if a.is_dir)
    assert len(steps) == 2
    newest = Path(client.download_artifacts(run_id, steps[-1], dst_path=str(tmp_path / "dl")))

    texts = [json.loads(r["body"])["text"] for r in _telegram(stub, "sendMessage")]
    assert any("new best" in t and "generation 0" in t for t in texts), texts
    (photo_req,) = _telegram(stub, "sendPhoto")
    (audio_req,) = _telegram(stub, "sendAudio")
    photo = multipart(photo_req)["photo"].get_content()
    audio = multipart(audio_req)["audio"].get_content()
    assert photo.startswith(PNG_MAGIC)
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert photo == (newest / "free_running_alignment.png").read_bytes()  # the latest step's
    assert audio == (newest / "free_running.wav").read_bytes()
    info = sf.info(io.BytesIO(audio))
    assert info.samplerate == 22050 and info.frames > 0
    hook = _new_best_hook(stub)
    assert hook["has_image"] is True and hook["has_audio"] is True
