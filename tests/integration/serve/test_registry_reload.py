"""Serving ``models:/NAME@ALIAS`` from a real MLflow SQLite registry: the alias moves, the service
follows; a broken version leaves the old model serving."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.integration.serve.serve_helpers import SineLoader, write_sine_checkpoint
from ttsops.errors import ServeError
from ttsops.serve.loader import ModelResolver, ModelSource, default_synthesizer_loader

pytestmark = pytest.mark.slow  # creating an MLflow SQLite store takes ~10 s here


def register(client, experiment_id: str, name: str, files: dict[str, Path]) -> str:
    """Log ``files`` under ``model/`` in a fresh run and register it, as registry.py does."""
    run = client.create_run(experiment_id)
    for target, src in files.items():  # log_artifact keeps the source's file name
        sub = Path(target).parent.as_posix()
        client.log_artifact(
            run.info.run_id, str(src), artifact_path="model" if sub == "." else f"model/{sub}"
        )
    client.set_terminated(run.info.run_id)
    if not _exists(client, name):
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(mv.version)


def _exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One SQLite registry for the module (creating its tables is the slow part)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("serve", artifact_location=str(root / "artifacts"))
    return uri, client, experiment


def _peak_hz(resp: httpx.Response) -> float:
    wav, sr = sf.read(io.BytesIO(resp.content), dtype="float32")
    return float(np.argmax(np.abs(np.fft.rfft(wav))) * sr / len(wav))


def _wait_for_version(url: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/models").json()["data"][0]["version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"still not serving version {version} after {timeout} s")


def test_alias_move_serves_the_new_model_and_a_broken_version_keeps_the_old(
    registry, serve, tmp_path, caplog
):
    uri, client, experiment = registry
    v1 = register(
        client,
        experiment,
        "tts",
        {"best_model.pt": write_sine_checkpoint(tmp_path / "a/best_model.pt", 200.0)},
    )
    # the registry's tree may nest best_model.pt deeper: the service looks for it with rglob
    v2 = register(
        client,
        experiment,
        "tts",
        {"ckpt/best_model.pt": write_sine_checkpoint(tmp_path / "b/best_model.pt", 800.0)},
    )
    broken = register(
        client, experiment, "tts", {"README.txt": _text(tmp_path / "c/README.txt", "no model here")}
    )
    client.set_registered_model_alias("tts", "champion", v1)

    loader = SineLoader()
    with serve({"tts": "models:/tts@champion"}, loader, tracking_uri=uri, reload_interval_s=0.1) as url:
        first = httpx.post(f"{url}/v1/tts", json={"text": "the first model"})
        client.set_registered_model_alias("tts", "champion", v2)
        _wait_for_version(url, v2)
        second = httpx.post(f"{url}/v1/tts", json={"text": "the second model"})

        client.set_registered_model_alias("tts", "champion", broken)
        deadline = time.monotonic() + 60
        while 'outcome="failed"' not in (metrics := httpx.get(f"{url}/metrics").text):
            assert time.monotonic() < deadline, "the broken version was never tried"
            time.sleep(0.05)
        still = httpx.post(f"{url}/v1/tts", json={"text": "still the second"})

    assert first.headers["x-model-version"] == v1 and _peak_hz(first) == pytest.approx(200, abs=5)
    assert second.headers["x-model-version"] == v2 and _peak_hz(second) == pytest.approx(800, abs=5)
    assert still.status_code == 200 and still.headers["x-model-version"] == v2
    assert 'ttsops_model_reloads_total{model="tts",outcome="ok"} 1.0' in metrics
    assert f'ttsops_model_info{{model="tts",version="{v2}"}} 1.0' in metrics
    assert caplog.text.count("no best_model.pt in its files (found: model/README.txt)") == 1  # not retried
    assert not (tmp_path / "cache" / "tts" / v1).exists()  # the replaced download was removed
    assert len(loader.loaded) == 2


def test_resolver_errors_name_the_source(registry, tmp_path):
    uri, client, experiment = registry
    resolver = ModelResolver(uri, tmp_path / "cache")
    with pytest.raises(
        ServeError, match=r"models:/ghost@champion: cannot resolve alias 'champion' in registry sqlite"
    ):
        resolver.current_version(ModelSource.parse("models:/ghost@champion"))
    with pytest.raises(ServeError, match=r"models:/ghost/3: download from sqlite:///.* failed"):
        resolver.fetch(ModelSource.parse("models:/ghost/3"), "3")


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pinned_registry_version_with_a_real_checkpoint(registry, serve, tiny_checkpoint):
    uri, client, experiment = registry
    version = register(client, experiment, "tts-real", {"best_model.pt": tiny_checkpoint})
    models = {"real": f"models:/tts-real/{version}"}
    with serve(models, default_synthesizer_loader("cpu"), tracking_uri=uri) as url:
        resp = httpx.post(f"{url}/v1/tts", json={"text": "From the registry."}, timeout=60)
        listed = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert resp.status_code == 200 and resp.headers["x-model-version"] == version
    wav, sr = sf.read(io.BytesIO(resp.content))
    assert sr == 22050 and 0 < len(wav) <= 60 * 2 * 256
    assert listed["source"] == f"models:/tts-real/{version}" and listed["version"] == version
