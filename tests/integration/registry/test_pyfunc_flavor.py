"""The registry's champion as an MLflow pyfunc model: ``mlflow.pyfunc.load_model`` and the real
``mlflow models serve`` CLI on ``models:/ttsops-tacotron2@champion`` speak like ``ttsops synthesize``."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import Model

from tests.helpers import free_port
from tests.integration.serve.serve_helpers import make_tiny_checkpoint
from ttsops.cli import main as ttsops_main
from ttsops.config import PromotionGate, RegistryConfig
from ttsops.registry.model_registry import Candidate, ModelRegistry

CHAMPION = "models:/ttsops-tacotron2@champion"
TEXT = "Hello from the registry."


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> str:
    """A store whose ``ttsops-tacotron2@champion`` is a tiny real checkpoint, registered by
    ModelRegistry as the tuner does; returns the tracking URI."""
    root = tmp_path_factory.mktemp("pyfunc-registry")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("study", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    ckpt = make_tiny_checkpoint(root / "gen_0" / "checkpoint_00000010.pt")
    registry = ModelRegistry(RegistryConfig(promotion_gate=PromotionGate(max_val_loss=10.0)), root / "study",
                             client=client)
    decision = registry.consider(Candidate("s", 0, 1.0, ckpt, run.info.run_id, metrics={
        "val_loss": 1.0, "attention_alignment_score": 0.9}))
    assert decision.promoted
    return uri


def test_load_model_speaks_like_ttsops_synthesize(champion, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion)  # models:/ resolves through the global registry URI
    got = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path / "dl")))
    meta = Model.load(str(got))
    assert meta.signature.inputs.input_names() == ["text"] and meta.signature.params.params[0].name == "seed"
    assert meta.saved_input_example_info is not None and (got / "artifacts" / "best_model.pt").is_file()
    model = mlflow.pyfunc.load_model(CHAMPION)
    out = model.predict(pd.DataFrame({"text": [TEXT, "Another one."]}))
    assert list(out.columns) == ["audio", "sample_rate", "seconds"] and list(out.sample_rate) == [22050] * 2
    wav = tmp_path / "cli.wav"
    assert ttsops_main(["synthesize", TEXT, "-o", str(wav), "--model", CHAMPION, "--tracking-uri", champion,
                        "--seed", "0", "--threads", "1"]) == 0
    assert out.audio[0] == wav.read_bytes()  # the same WAV, byte for byte
    reseeded = model.predict(pd.DataFrame({"text": [TEXT]}), params={"seed": 1})
    assert reseeded.audio[0] != out.audio[0]


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "mlflow models serve exited"
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
        time.sleep(0.5)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_scoring_request(champion, tmp_path):
    port, bindir = free_port(), str(Path(sys.executable).parent)  # the server runs the venv's uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion, "OMP_NUM_THREADS": "1",
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [os.path.join(bindir, "mlflow"), "models", "serve", "-m", CHAMPION, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        body = {"dataframe_split": {"columns": ["text"], "data": [[TEXT]]}, "params": {"seed": 0}}
        resp = httpx.post(f"{url}/invocations", json=body, timeout=120)
        bad = httpx.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["text"], "data": [["~~~"]]}},
                         timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the uvicorn it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["predictions"]
    wav = tmp_path / "cli.wav"
    assert ttsops_main(["synthesize", TEXT, "-o", str(wav), "--model", CHAMPION, "--tracking-uri", champion,
                        "--seed", "0", "--threads", "1"]) == 0
    assert base64.b64decode(row["audio"]) == wav.read_bytes() and row["sample_rate"] == 22050
    assert bad.status_code == 400 and "nothing to say" in bad.json()["message"]
