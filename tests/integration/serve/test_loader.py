"""Model sources: parsing ``--model`` values, finding best_model.pt, naming models."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ttsops.errors import ConfigError, ServeError
from ttsops.serve.cli import _resolve_models
from ttsops.serve.loader import ModelSource, find_best_model


@pytest.mark.parametrize(
    "raw, name, alias, version",
    [
        ("models:/ttsops-tacotron2@champion", "ttsops-tacotron2", "champion", None),
        ("models:/tts/12", "tts", None, "12"),
        ("models:/tts/12/", "tts", None, "12"),
    ],
)
def test_registry_uris(raw, name, alias, version):
    src = ModelSource.parse(raw)
    assert (src.registry_name, src.alias, src.version, src.path) == (name, alias, version, None)
    assert src.follows_alias is (alias is not None) and src.default_name == name


@pytest.mark.parametrize(
    "raw, message",
    [
        ("models:/tts", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("models:/tts@", "expected models:/NAME@ALIAS"),
        ("models:/tts/latest", "expected models:/NAME@ALIAS"),
        ("models:/a/1/extra", "expected models:/NAME@ALIAS"),
        ("s3://bucket/best_model.pt", "expected a checkpoint path or models:/NAME@ALIAS"),
        ("/no/such/best_model.pt", "/no/such/best_model.pt: no such file or directory"),
    ],
)
def test_bad_sources_are_one_line_errors(raw, message):
    with pytest.raises(ServeError, match="^model source ") as e:
        ModelSource.parse(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_paths_and_names(tmp_path: Path):
    run = tmp_path / "demo-run"
    (run / "a" / "b").mkdir(parents=True)
    (run / "a" / "b" / "best_model.pt").write_bytes(b"deep")
    (run / "a" / "best_model.pt").write_bytes(b"shallow")
    assert ModelSource.parse(str(run)).default_name == "demo-run"
    assert ModelSource.parse(str(run / "a" / "best_model.pt")).default_name == "best_model"
    assert find_best_model(run, "x").read_bytes() == b"shallow"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "MLmodel").write_text("{}")
    with pytest.raises(ServeError, match=r"x: no best_model.pt in its files \(found: MLmodel\)"):
        find_best_model(tmp_path / "empty", "x")


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"model": None, "config": None, "tracking_uri": None, **kw})


def test_cli_model_names_and_config_defaults(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ckpt = tmp_path / "voice.pt"
    ckpt.write_bytes(b"x")
    models, uri = _resolve_models(_args(model=[f"a={ckpt}", str(ckpt), "models:/tts@prod"]))
    assert models == {"a": str(ckpt), "voice": str(ckpt), "tts": "models:/tts@prod"} and uri is None
    with pytest.raises(ConfigError, match="the name 'voice' is used twice"):
        _resolve_models(_args(model=[str(ckpt), str(ckpt)]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "registry: {model_name: demo-tts, alias: live}\nmonitoring: {platforms: {mlflow: {tracking_uri: sqlite:///x.db}}}\n"
    )
    assert _resolve_models(_args(config=str(cfg))) == (
        {"demo-tts": "models:/demo-tts@live"},
        "sqlite:///x.db",
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert _resolve_models(_args(model=["models:/x/1"]))[1] == "http://mlflow:5000"
