"""Where the MLflow store is, where a new experiment keeps its artifacts, and get-or-create."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsops.infra.tracking import (
    EARLY_STOP_PREFIX,
    Tag,
    artifact_root,
    early_stop_tag,
    embedded_tracking_uri,
    get_or_create_experiment,
    tracking_uri,
)


def test_the_embedded_store_is_absolute_and_used_only_without_a_configured_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert embedded_tracking_uri("runs") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert tracking_uri(None, "runs") == embedded_tracking_uri("runs")
    assert tracking_uri("http://mlflow:5000", "runs") == "http://mlflow:5000"


@pytest.mark.parametrize(
    ("uri", "default", "expected"),
    [
        ("sqlite:////data/m/mlflow.db", None, Path("/data/m/mlartifacts").as_uri()),
        ("sqlite:////data/m/mlflow.db", Path("/elsewhere"), Path("/data/m/mlartifacts").as_uri()),
        ("http://mlflow:5000", Path("/x"), None),
        ("https://mlflow", None, None),
        ("databricks", Path("/x"), None),
        ("postgresql://u@h/db", Path("/work/mlartifacts"), Path("/work/mlartifacts").as_uri()),
        ("postgresql://u@h/db", None, None),
    ],
)
def test_artifact_root_table(uri, default, expected):
    assert artifact_root(uri, default) == expected


def test_get_or_create_experiment_is_idempotent(mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    first = get_or_create_experiment(client, "e", (tmp_path / "art").as_uri())
    assert get_or_create_experiment(client, "e", None) == first
    assert client.get_experiment(first).artifact_location == (tmp_path / "art").as_uri()


def test_every_tag_name_is_one_constant():
    names = [v for k, v in vars(Tag).items() if k.isupper()]
    assert len(names) == len(set(names)), "two constants name the same tag"
    assert early_stop_tag("trial", "action") == f"{EARLY_STOP_PREFIX}.trial.action"
