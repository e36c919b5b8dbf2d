"""Reproducing the tuner's generations: a real two-generation study of the real train.py
(configs/tiny.yaml's model), then ``ttsops reproduce`` of the generation that warm-started from
the other (through its parent chain) and of the champion by its registry name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.smart_tuner.fixtures.tuner_testkit import (
    mlflow_client,
    real_config,
    study_runs,
    write_config,
)
from ttsops.cli import main as ttsops_main
from ttsops.infra.tracking import Tag

pytestmark = pytest.mark.slow  # a study of two generations, then four or five reruns: a few minutes here


@pytest.fixture(scope="module")
def study(tiny_dataset, mlflow_template, tmp_path_factory) -> SimpleNamespace:
    from ttsops.smart_tuner.trainer.generation import RunnerConfig
    from ttsops.smart_tuner.tuner import Tuner
    from ttsops.train.adapter import Tacotron2Adapter

    tmp = tmp_path_factory.mktemp("study")
    shutil.copyfile(mlflow_template, tmp / "mlflow.db")
    _, cfg = write_config(tmp, real_config(tmp, tiny_dataset, n_trials=2, epochs=2))
    summary = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.1, heartbeat_s=1.0), trainer=Tacotron2Adapter(cfg.adapter)).run()
    assert summary.status == "finished"
    _, children = study_runs(cfg)
    return SimpleNamespace(cfg=cfg, uri=cfg.monitoring.platforms.mlflow.tracking_uri, children=children, tmp=tmp)


def reproduce(s: SimpleNamespace, ref: str, out: Path, *extra: str) -> tuple[int, list[dict]]:
    code = ttsops_main(["reproduce", ref, "--tracking-uri", s.uri, "-o", str(out), *extra])
    return code, json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else []


def test_a_warm_started_generation_is_reproduced_through_its_parent(study, tmp_path):
    gen0, gen1 = study.children
    tags = gen1.data.tags
    assert tags[Tag.TRAIN_RESTART_MODE] == "warm_start" and tags[Tag.SOURCE_RUN] == gen0.info.run_id, tags
    assert tags[Tag.SOURCE_STEP] == gen0.data.tags[Tag.FINAL_STEP]
    code, report = reproduce(study, gen1.info.run_id, tmp_path / "r")
    assert code == 0, report
    assert [r["original"] for r in report] == [gen0.info.run_id, gen1.info.run_id]
    assert report[0]["max_steps"] is None  # the parent finished at the step its checkpoint was taken
    assert report[0]["weights"].startswith(f"weights at step {tags[Tag.SOURCE_STEP]} bit-identical to those")
    assert [r["verdict"] for r in report] == ["identical", "identical"], report
    assert report[1]["weights"] == "final weights bit-identical to the original's"
    client = mlflow_client(study.cfg)
    for r in report:
        assert client.get_run(r["reproduction"]).data.tags[Tag.REPRODUCES] == r["original"]


def test_the_parent_checkpoint_can_come_from_the_registry_artifact(study, tmp_path):
    """gen 1 warm-started from the study's best_model.pt (a copy of gen 0's final checkpoint, also logged
    to gen 0's run when the registry took it): with that file gone, the artifact stands in."""
    from ttsops.registry import BEST_FILE

    gen0, gen1 = study.children
    best = study.tmp / "runs" / "real" / BEST_FILE
    best.rename(best.with_suffix(".aside"))
    try:
        code, report = reproduce(study, gen1.info.run_id, tmp_path / "r", "--parent", "artifact")
    finally:
        best.with_suffix(".aside").rename(best)
    assert code == 0, report
    assert [r["original"] for r in report] == [gen1.info.run_id]  # no parent rerun
    assert report[0]["source"].endswith(f"sources/{gen0.info.run_id}/{BEST_FILE}")
    assert report[0]["verdict"] == "identical", report


def test_the_champion_is_reproduced_by_its_registry_name(study, tmp_path):
    champion = mlflow_client(study.cfg).get_model_version_by_alias("real-taco", "champion")
    code, report = reproduce(study, "models:/real-taco@champion", tmp_path / "r", "--parent", "artifact")
    assert code == 0, report
    assert [r["original"] for r in report] == [champion.run_id]
    assert report[0]["verdict"] == "identical", report
