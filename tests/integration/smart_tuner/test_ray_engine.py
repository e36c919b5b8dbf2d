"""Ray Tune as the engine (``core_engine.primary_engine: ray_tune``), with real processes: an
embedded Ray, real trainers (the real train.py for ASHA, the fast foreign trainer for PBT), a real
MLflow store and registry."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray Tune is the optional extra ttsops[ray] (scripts/setup.sh installs it)")

from tests.integration.smart_tuner.fixtures.tuner_testkit import (  # noqa: E402
    foreign_config,
    mlflow_client,
    real_config,
    study_runs,
    write_config,
)
from ttsops.registry.model_registry import BEST_FILE  # noqa: E402
from ttsops.smart_tuner import cli  # noqa: E402
from ttsops.smart_tuner.raytune.study import RayStudy  # noqa: E402
from ttsops.train.adapter import Tacotron2Adapter  # noqa: E402

pytestmark = pytest.mark.slow


def test_asha_study_runs_real_train_py_generations_and_registers_the_champion(tmp_path, tiny_corpus):
    ray = {"scheduler": "asha", "num_cpus": 2, "grace_period": 1, "reduction_factor": 2}
    data = real_config(tmp_path, tiny_corpus, n_trials=3, epochs=2,
                       extra={"ray_tune": ray, "core_engine": {"primary_engine": "ray_tune"}})
    _, cfg = write_config(tmp_path, data)
    summary = RayStudy(cfg, trainer=Tacotron2Adapter).run()

    assert summary.status == "finished" and summary.stop_reason == "n_trials (3) reached"
    assert [r["trial"] for r in summary.rows] == [0, 1, 2]
    states = [r["state"] for r in summary.rows]
    assert "complete" in states and set(states) <= {"complete", "pruned"}
    parent, children = study_runs(cfg)  # one parent, a child per trainer launch
    assert {int(c.data.tags["ttsops.trial"]) for c in children} == {0, 1, 2}
    for c in children:
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c.data.metrics["val_loss"] > 0  # logged by train.py itself into the child run
        assert "objective" in c.data.metrics and c.data.params["tuner.learning_rate"]
    first = next(c for c in children if c.data.tags["ttsops.trial"] == "0")  # the config's own point
    assert float(first.data.params["tuner.learning_rate"]) == pytest.approx(1e-3)  # train.py's default
    best = min((r for r in summary.rows if r["state"] == "complete"), key=lambda r: r["value"])
    assert summary.best_trial == best["trial"] and summary.best_value == pytest.approx(best["value"])
    assert (cfg.core_engine.work_dir and (summary.study_dir / BEST_FILE).is_file())
    versions = mlflow_client(cfg).search_model_versions("name='real-taco'")
    assert versions and parent.data.tags["ttsops.status"] == "finished"


def test_pbt_exploits_a_better_trial_by_warm_starting_from_its_checkpoint(tmp_path):
    ray = {"scheduler": "pbt", "num_cpus": 2, "population": 2, "perturbation_interval": 2,
           "quantile_fraction": 0.5, "resample_probability": 0.0}
    data = foreign_config(tmp_path, n_trials=2, epochs=4,
                          extra={"ray_tune": ray, "core_engine": {"primary_engine": "ray_tune"}})
    path, cfg = write_config(tmp_path, data)
    assert cli.main(["--config", str(path)]) == 0  # the command users run

    parent, children = study_runs(cfg)
    exploits = [c for c in children if c.data.tags["ttsops.plan_reason"].startswith("PBT exploit")]
    assert exploits, [c.data.tags["ttsops.plan_reason"] for c in children]
    for c in exploits:  # the clone starts from the other trial's weights, with perturbed params
        tags = c.data.tags
        assert tags["ttsops.restart_mode"] == "warm_start"
        source = int(tags["ttsops.warm_start_source"].split(":")[0].removeprefix("trial "))
        assert source != int(tags["ttsops.trial"])
        assert "explore: lr " in tags["ttsops.plan_reason"]
        lr = float(c.data.params["tuner.lr"])
        assert 0.01 <= lr <= 0.5  # explore stays inside the search space
    client = mlflow_client(cfg)
    logs = [a.path for a in client.list_artifacts(parent.info.run_id, "ray_tune")]
    assert logs == ["ray_tune/pbt_global.txt"]
    assert (cfg.core_engine.work_dir and (tmp_path / "runs" / "foreign" / BEST_FILE).is_file())

    from ttsops.report.page import build_report

    html = build_report(tmp_path / "runs" / "foreign", tmp_path / "report").read_text()
    assert "PBT exploit" in html


def test_a_study_joins_an_existing_ray_cluster(tmp_path):
    """``ray_tune.address``: the study runs on a cluster started beforehand (``ray start --head``)
    and leaves it running. Ray's token authentication is off on both sides here (a cluster's token
    is Ray's business: ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` on the client)."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
         "false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    try:
        deadline = time.monotonic() + 120  # the head's GCS answers some seconds after the start
        while True:
            try:
                socket.create_connection((socket.gethostbyname(socket.gethostname()), port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                assert time.monotonic() < deadline, "the Ray head did not listen within 120 s"
                time.sleep(0.5)
        ray_cfg = {"scheduler": "asha", "address": f"127.0.0.1:{port}", "grace_period": 3}
        data = foreign_config(tmp_path, n_trials=2, epochs=3,
                              extra={"ray_tune": ray_cfg, "core_engine": {"primary_engine": "ray_tune"}})
        path, cfg = write_config(tmp_path, data)
        # a process of its own: Ray caches its authentication mode per process
        tune = subprocess.run(
            [sys.executable, "-c", "import sys; from ttsops.smart_tuner import cli; sys.exit(cli.main(sys.argv[1:]))",
             "--config", str(path)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )
        assert tune.returncode == 0, tune.stderr[-3000:]
        summary = json.loads((tmp_path / "runs" / "foreign" / "summary.json").read_text())
        assert [r["state"] for r in summary["rows"]] == ["complete", "complete"]
        assert summary["best_trial"] in (0, 1)
        assert head.poll() is None  # the study disconnected; the cluster is still there
    finally:
        head.terminate()
        head.wait(60)


def test_stopping_a_ray_study_stops_every_trainer_with_its_checkpoint(tmp_path):
    """The tuner's stop (SIGINT/SIGTERM to ``ttsops tune`` sets it) ends the Ray study: every
    trial is stopped, its trainer exits on SIGINT, nothing is left running, the study says
    interrupted."""
    import threading

    from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
    from ttsops.smart_tuner.trainer.trainer_wrapper import pid_alive, read_pid_file

    adapter = kit.foreign_adapter_dict(epoch_seconds=1.0)
    adapter["stop_grace_s"] = 20.0
    data = foreign_config(tmp_path, n_trials=2, epochs=50, adapter=adapter,
                          extra={"ray_tune": {"num_cpus": 2, "grace_period": 50},
                                 "core_engine": {"primary_engine": "ray_tune"}})
    _, cfg = write_config(tmp_path, data)
    stop = threading.Event()
    study = RayStudy(cfg, stop_event=stop)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("s", study.run()), daemon=True)
    th.start()
    trials = tmp_path / "runs" / "foreign" / "ray_trials"
    kit.wait_for(lambda: len(list(trials.glob("trial_*/seg_00/ckpt-*.npz"))) >= 1, 120, "a trainer's first epoch")
    stop.set()
    th.join(180)
    assert not th.is_alive(), "the study did not end after its stop"
    s = box["s"]
    assert s.status == "interrupted" and s.stop_reason == "stopped by signal"
    for seg in trials.glob("trial_*/seg_*"):
        info = read_pid_file(seg)
        if info is not None:
            assert not pid_alive(int(info["pid"]), info.get("start_ticks")), f"trainer left running in {seg}"
    _, children = study_runs(cfg)
    assert children and all(c.info.status in ("KILLED", "FINISHED") for c in children)
