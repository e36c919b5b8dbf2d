"""train.py on the ``mlflow server`` (metrics over HTTP, artifacts proxied), the service on another
host loading ``models:/NAME@champion`` through that server, and the alias hot swap across hosts:
host 0 tunes study ``a`` (the real train.py, one generation), host 1 serves the champion, host 2
tunes study ``b`` under the same model name; its best takes the alias and host 1 follows.
"""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import yaml

from tests import netlab
from tests.integration.multihost.conftest import PYTHON
from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
from ttsops.config import parse_config
from ttsops.smart_tuner.study import history

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

PORT = 8000  # the service's own namespace: no other test can hold it


def _study(lab, at, own, tiny_dataset, study: str, model: str):
    data = kit.real_config(at, tiny_dataset, n_trials=1, epochs=1)
    data["core_engine"]["study_name"] = study  # storage: the host's own SQLite (one worker per study)
    data["monitoring"] = {"platforms": {"mlflow": {"tracking_uri": lab.mlflow, "experiment_name": model}}}
    data["registry"]["model_name"] = model
    (own / "tune.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return parse_config(data, "tune.yaml")


def _tune(lab, i: int, own, at, name: str) -> float:
    started = time.monotonic()
    log = lab.store / name / f"tune{i}.log"
    proc = lab.start(i, [PYTHON, "-m", "ttsops", "tune", "--config", str(at / "tune.yaml")], own, at, log)
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    return time.monotonic() - started


def _served_version(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=5).json()["data"][0]["version"]


def test_train_py_on_the_server_and_the_champion_served_and_swapped_on_another_host(lab, tiny_dataset):
    name = f"taco{int(time.time()) % 100000}"
    own, at = lab.dirs(name)
    cfg_a = _study(lab, at, own[0], tiny_dataset, "a", name)
    _study(lab, at, own[2], tiny_dataset, "b", name)
    tune_a_s = _tune(lab, 0, own[0], at, name)

    client = kit.mlflow_client(cfg_a)
    (v1,) = client.search_model_versions(f"name='{name}'")
    assert client.get_model_version_by_alias(name, "champion").version == v1.version
    run = client.get_run(v1.run_id)  # the generation's child run, written by train.py over HTTP
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied
    assert {"train_loss", "val_loss", "mel_loss"} <= set(run.data.metrics)
    assert run.data.tags["ttsops.study"] == "a"
    stored = [p for p in (lab.store / "server" / "artifacts").rglob("MLmodel") if v1.run_id in str(p)]
    assert len(stored) == 1  # the pyfunc model sits in the server's storage, not on host 0
    import optuna

    # host 0's own SQLite study, read through the test's view of that host's disk
    trial = optuna.load_study(study_name="a", storage=f"sqlite:///{own[0] / 'runs' / 'optuna.db'}").best_trial
    assert trial.user_attrs[history.RUN_ID_ATTR] == v1.run_id

    serve_log = lab.store / name / "serve1.log"
    url = f"http://{lab.net.hosts[1].ip}:{PORT}"
    serve = [PYTHON, "-m", "ttsops", "serve", "--model", f"models:/{name}@champion", "--tracking-uri", lab.mlflow,
             "--host", lab.net.hosts[1].ip, "--port", str(PORT), "--reload-interval", "0.5",
             "--cache-dir", str(at / "cache")]  # fmt: skip
    service = lab.start(1, serve, own[1], at, serve_log)
    try:
        ready_s = netlab.wait_http(f"{url}/readyz", 120, service, serve_log)
        first = httpx.post(f"{url}/v1/tts", json={"text": "Served on host one."}, timeout=60)
        assert first.status_code == 200 and first.headers["x-model-version"] == v1.version

        tune_b_s = _tune(lab, 2, own[2], at, name)  # another host's study takes the alias
        v2 = client.get_model_version_by_alias(name, "champion")
        assert v2.version != v1.version and v2.tags["ttsops.study"] == "b"
        swapped = time.monotonic()
        kit.wait_for(lambda: _served_version(url) == v2.version, 60, f"host 1 to serve version {v2.version}")
        swap_s = time.monotonic() - swapped
        second = httpx.post(f"{url}/v1/tts", json={"text": "And now the new champion."}, timeout=60)
        assert second.status_code == 200 and second.headers["x-model-version"] == v2.version
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert f'ttsops_model_reloads_total{{model="{name}",outcome="ok"}} 1.0' in metrics
    finally:
        service.terminate()
        service.wait(30)
    assert not (own[0] / "cache").exists() and (own[1] / "cache").is_dir()  # downloaded on host 1 only
    logger.info(
        "train.py on the server: study a %.1f s, study b %.1f s; service ready in %.1f s; alias swap seen "
        "%.2f s after host 2's tuner exited", tune_a_s, tune_b_s, ready_s, swap_s,
    )  # fmt: skip
