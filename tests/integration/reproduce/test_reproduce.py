"""``ttsops reproduce`` end to end: a real train.py run (configs/tiny.yaml, 2 epochs) on a
DVC-versioned copy of the tiny dataset, in a real MLflow SQLite store, rerun by the real command.

The original is trained once per module; each test reruns it (or a copy of its record with one
recorded fact changed, for the refusals, which train nothing)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import TINY_CONFIG, run_train
from ttsops.cli import main as ttsops_main
from ttsops.infra.tracking import Tag
from ttsops.reproduce.record import read_curves

EPOCHS = 2  # 3 steps each (10 training clips, batches of 4)
pytestmark = pytest.mark.slow  # the module trains its original once (about a minute); the refusals are unit-tested fast too


@pytest.fixture(scope="module")
def original(tiny_dataset, mlflow_template, tmp_path_factory) -> SimpleNamespace:
    from mlflow import MlflowClient

    from ttsops.data.versioning import version_dataset

    root = tmp_path_factory.mktemp("reproduce")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ds = root / "data" / "ds"
    shutil.copytree(tiny_dataset, ds, ignore=shutil.ignore_patterns(".mel_cache"))
    version = version_dataset(ds, push=False).id
    out = root / "orig"
    proc = run_train("-o", str(out), "--dataset", str(ds), "--config", str(TINY_CONFIG), "--hparams", f"epochs={EPOCHS}",
                     "--tracking_uri", uri)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((out / "train_state.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    return SimpleNamespace(uri=uri, ds=ds, version=version, out=out, state=state, run_id=state["mlflow_run_id"],
                           client=client, root=root)


def reproduce(o: SimpleNamespace, out: Path, *extra: str, run_id: str | None = None) -> tuple[int, list[dict]]:
    code = ttsops_main(["reproduce", run_id or o.run_id, "--tracking-uri", o.uri, "-o", str(out), *extra])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else []
    return code, report


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"adam.{i}.{k}": v for i, s in state["optimizer"]["state"].items() for k, v in s.items()}}


def test_the_same_thread_count_reproduces_every_value_and_the_final_checkpoint(original, tmp_path):
    o = original
    tags = o.client.get_run(o.run_id).data.tags
    assert tags[Tag.DATASET_VERSION] == o.version and tags[Tag.TORCH_THREADS] == "1"
    assert tags[Tag.TRAIN_STATUS] == "finished" and tags[Tag.FINAL_STEP] == str(3 * EPOCHS)
    wav = next((o.ds / "wavs").glob("*.wav"))
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1  # the working copy changes after the run: the recorded version is what counts
    wav.write_bytes(bytes(data))
    code, report = reproduce(o, tmp_path / "r")
    assert code == 0 and report[-1]["verdict"] == "identical", report
    rerun = report[-1]
    orig = read_curves(o.client, o.run_id, ["val_loss", "train_loss", "mcd"])
    mine = read_curves(o.client, rerun["reproduction"], ["val_loss", "train_loss", "mcd"])
    assert sorted(orig["val_loss"]) == [3, 6] and orig == mine  # bit-identical at every validation
    a = weights(o.state["last_checkpoint"])
    b = weights(json.loads((Path(rerun["output"]) / "train_state.json").read_text())["last_checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "final checkpoint differs"
    assert o.client.get_run(rerun["reproduction"]).data.tags[Tag.REPRODUCES] == o.run_id
    restored = Path(rerun["output"]).parents[1] / "data" / o.version[:12] / "ds"
    assert restored.is_dir() and (restored / "metadata.csv").read_bytes() == (o.ds / "metadata.csv").read_bytes()


def test_another_thread_count_stays_within_the_tolerance(original, tmp_path, capsys):
    code, report = reproduce(original, tmp_path / "r", "--threads", "2", "--steps", "3")
    out = capsys.readouterr().out
    assert code == 0, out
    assert report[-1]["max_steps"] == 3 and report[-1]["verdict"] in ("within tolerance", "identical")
    val = next(m for m in report[-1]["metrics"] if m["name"] == "val_loss")
    assert val["points"] == 1 and val["max_rel"] <= 1e-3  # the epoch's validation ran before the stop at step 3
    assert "2 CPU threads instead of the recorded 1" in out and "val_loss, side by side" in out


def clone(o: SimpleNamespace, **changed: str) -> str:
    """A new run holding the original's record (params, tags, config.yaml) with ``changed`` tags."""
    from mlflow.entities import Param, RunTag

    run = o.client.get_run(o.run_id)
    new = o.client.create_run(run.info.experiment_id, run_name="clone").info.run_id
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} | changed
    o.client.log_batch(new, params=[Param(k, v) for k, v in run.data.params.items()],
                       tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as tmp:
        o.client.log_artifact(new, o.client.download_artifacts(o.run_id, "config.yaml", tmp))
    return new


def test_another_commit_is_refused_in_one_line(original, tmp_path, capsys):
    other = "0123456789ab" + "0" * 28
    code, _ = reproduce(original, tmp_path / "r", run_id=clone(original, **{Tag.GIT_COMMIT: other}))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "the run was made at commit 0123456789ab, this tree is at " in err and "--allow-other-commit" in err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("train.log"))  # nothing trained


def test_one_changed_byte_of_unversioned_data_is_refused_in_one_line(original, tmp_path, capsys):
    from ttsops.data.dataset import dataset_fingerprint

    ds = tmp_path / "ds"
    shutil.copytree(original.ds, ds, ignore=shutil.ignore_patterns(".mel_cache"))
    fp = dataset_fingerprint(ds)
    run = clone(original, **{Tag.DATASET: str(ds), Tag.DATASET_VERSION: f"sha256:{fp}", Tag.DATASET_FINGERPRINT: fp})
    (ds / "metadata.csv").write_bytes((ds / "metadata.csv").read_bytes().replace(b"a", b"e", 1))
    code, _ = reproduce(original, tmp_path / "r", run_id=run)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"at {ds}: content fingerprint " in err and f"is not the recorded {fp}" in err
