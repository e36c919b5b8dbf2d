"""``ttsops reproduce`` on bad input: one line on stderr, exit 2, nothing trained (a real, empty
MLflow store; no training)."""

from __future__ import annotations

import pytest

from ttsops.cli import main as ttsops_main


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["abc"], "no MLflow store: pass --tracking-uri URI (or set MLFLOW_TRACKING_URI)"),
        (["abc", "--tracking-uri", "{uri}", "--steps", "0"], "--steps 0: must be at least 1"),
        (["nope", "--tracking-uri", "{uri}"], "run nope: not found in sqlite:///"),
        (["models:/taco@champion", "--tracking-uri", "{uri}"], "models:/taco@champion: not in the registry at sqlite:///"),
        (["models:/taco", "--tracking-uri", "{uri}"], "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment, mlflow_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = [a.replace("{uri}", mlflow_uri) for a in args]
    assert ttsops_main(["reproduce", *argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_a_run_that_is_not_train_pys_is_refused(mlflow_uri, tmp_path, capsys):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_param(run, "epochs", "3")
    assert ttsops_main(["reproduce", run, "--tracking-uri", mlflow_uri, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ttsops: error: run {run}: no tag git_commit, dataset, dataset_fingerprint, dataset_version: " \
                  "not a run of ttsops train.py"
