"""ModelRegistry against a real MLflow SQLite tracking + model registry store."""

from __future__ import annotations

import filecmp
from pathlib import Path

import mlflow.artifacts
import pytest
from mlflow import MlflowClient

from ttsops.config import PromotionGate, RegistryConfig
from ttsops.errors import RegistryError
from ttsops.registry.cli import main
from ttsops.registry.model_registry import (
    BEST_FILE,
    BEST_META,
    Candidate,
    ModelRegistry,
    gate_check,
)

GOOD = {"val_loss": 0.5, "attention_alignment_score": 0.9}


@pytest.fixture
def client(mlflow_uri, tmp_path):
    c = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    c.create_experiment("reg", artifact_location=(tmp_path / "artifacts").as_uri())
    return c


def _candidate(client, tmp_path: Path, n: int, objective: float, metrics=GOOD) -> Candidate:
    exp = client.get_experiment_by_name("reg").experiment_id
    run = client.create_run(exp, tags={"ttsops.trial": str(n)})
    ckpt = tmp_path / f"gen_{n}" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(f"weights of generation {n}".encode() * 100)
    return Candidate(
        "s",
        n,
        objective,
        ckpt,
        run.info.run_id,
        {"lr": 0.1 * (n + 1)},
        {"lr": 0.1 * (n + 1), "batch_size": 4},
        metrics,
        "ds-abc",
    )


@pytest.mark.parametrize(
    "metrics, passed, needle",
    [
        (GOOD, True, ""),
        ({"val_loss": 0.5, "attention_alignment_score": 0.3}, False, "attention_alignment_score=0.3"),
        ({"val_loss": 0.5}, False, "attention_alignment_score missing"),
        ({"val_loss": 50.0, "attention_alignment_score": 0.9}, False, "val_loss=50"),
        ({"val_loss": 0.5, "attention_alignment_score": float("nan")}, False, "missing"),
    ],
)
def test_gate_check(metrics, passed, needle):
    gate = PromotionGate(min_attention_alignment_score=0.5, max_val_loss=10.0)
    ok, reasons = gate_check(gate, metrics)
    assert ok is passed and needle in "; ".join(reasons)
    assert gate_check(PromotionGate(min_attention_alignment_score=None), {}) == (True, [])


@pytest.mark.parametrize(("wer", "passed", "needle"), [
    (0.3, True, ""), (0.35, True, ""), (0.6, False, "asr_wer=0.6 (needs <= 0.35)"), (None, False, "asr_wer missing"),
])
def test_the_gate_can_require_intelligibility(wer, passed, needle):
    gate = PromotionGate(min_attention_alignment_score=None, max_asr_wer=0.35)
    ok, reasons = gate_check(gate, {"val_loss": 1.0} | ({} if wer is None else {"asr_wer": wer}))
    assert ok is passed and needle in "; ".join(reasons)


def test_best_model_and_alias_always_point_at_the_best(client, tmp_path, mlflow_uri, monkeypatch):
    reg = ModelRegistry(
        RegistryConfig(model_name="m", promotion_gate=PromotionGate(max_val_loss=10.0)),
        tmp_path / "study",
        client=client,
    )
    bad = {**GOOD, "val_loss": 99.0}
    plan = [(5.0, GOOD), (3.0, GOOD), (4.0, GOOD), (2.0, bad), (1.0, GOOD), (1.5, GOOD)]
    best = champion = None
    for n, (obj, metrics) in enumerate(plan):
        c = _candidate(client, tmp_path, n, obj, metrics)
        d = reg.consider(c)
        assert d.new_best is (best is None or obj < best.objective)
        if d.new_best:
            best = c
            assert d.promoted is (metrics is GOOD)
            if d.promoted:
                champion = c
        assert filecmp.cmp(reg.best_path, best.checkpoint, shallow=False)
        assert reg.best().generation == best.generation
        mv = client.get_model_version_by_alias("m", "champion")
        assert mv.run_id == champion.run_id
    versions = client.search_model_versions("name='m'")
    assert len(versions) == 4  # one per new best: 5, 3, 2, 1
    failed = next(v for v in versions if v.tags["ttsops.generation"] == "3")
    assert failed.tags["gate"].startswith("fail: val_loss=99")
    assert failed.tags["metric.val_loss"] == "99.0" and failed.tags["param.lr"] == "0.4"
    assert failed.tags["dataset_version"] == "ds-abc"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    got = Path(mlflow.artifacts.download_artifacts("models:/m@champion", dst_path=str(tmp_path / "dl")))
    assert filecmp.cmp(got / BEST_FILE, best.checkpoint, shallow=False)
    assert (got / "ttsops_model.json").is_file()
    assert not (got / "MLmodel").exists()  # not a Tacotron2 checkpoint: the file alone, no pyfunc flavor
    assert not [p for p in reg.study_dir.iterdir() if p.name.startswith(".") and p.name != ".registry.lock"]


def test_registering_is_idempotent_and_a_lost_best_file_is_repaired(client, tmp_path):
    reg = ModelRegistry(RegistryConfig(model_name="m2"), tmp_path / "study", client=client)
    c = _candidate(client, tmp_path, 0, 1.0)
    first = reg.consider(c)
    (reg.study_dir / BEST_META).unlink()  # a tuner killed between the registry and the file
    again = reg.ensure_best(c)
    assert again.new_best and again.version == first.version
    assert len(client.search_model_versions("name='m2'")) == 1
    assert reg.ensure_best(c).new_best is False  # already in step
    assert filecmp.cmp(reg.best_path, c.checkpoint, shallow=False)


def test_files_only_without_mlflow_and_non_finite_objectives(tmp_path):
    reg = ModelRegistry(RegistryConfig(), tmp_path / "study", client=None)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    assert not reg.consider(Candidate("s", 0, float("nan"), ckpt)).new_best
    d = reg.consider(Candidate("s", 1, 2.0, ckpt))
    assert d.new_best and d.version is None and not d.promoted
    with pytest.raises(RegistryError, match="does not exist"):
        reg.consider(Candidate("s", 2, 1.0, tmp_path / "missing.pt"))
    assert reg.best().generation == 1


def test_cli_list_show_promote(client, tmp_path, mlflow_uri, capsys):
    reg = ModelRegistry(
        RegistryConfig(model_name="cli", promotion_gate=PromotionGate(max_val_loss=1.0)),
        tmp_path / "study",
        client=client,
    )
    reg.consider(_candidate(client, tmp_path, 0, 2.0))
    reg.consider(_candidate(client, tmp_path, 1, 1.0, {**GOOD, "val_loss": 5.0}))  # v2 fails the gate
    cfg = tmp_path / "tune.yaml"  # the gate comes from the config, like the tuner's
    cfg.write_text(
        f"monitoring: {{platforms: {{mlflow: {{tracking_uri: '{mlflow_uri}'}}}}}}\n"
        "registry: {model_name: cli, promotion_gate: {max_val_loss: 1.0}}\n"
    )
    base = ["--config", str(cfg)]
    assert main(base + ["list"]) == 0
    out = capsys.readouterr().out
    assert "champion" in out and "fail" in out
    assert main(base + ["show", "@champion"]) == 0
    assert "ttsops.generation = 0" in capsys.readouterr().out
    with pytest.raises(RegistryError, match="fails the promotion gate: val_loss=5"):
        main(base + ["promote", "2"])
    assert main(base + ["promote", "2", "--force"]) == 0
    assert str(client.get_model_version_by_alias("cli", "champion").version) == "2"
    with pytest.raises(RegistryError, match="cli 9"):
        main(base + ["show", "9"])
