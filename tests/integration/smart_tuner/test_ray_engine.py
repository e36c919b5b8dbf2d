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
