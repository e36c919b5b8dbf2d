"""DVC round trip with the real dvc CLI: version, change the data, version again, check out the
first version byte for byte, and restore a version from the remote when the cache is gone."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from ttsops.cli import main as ttsops_main
from ttsops.data.versioning import checkout_version, dvc_version, list_versions, version_dataset
from ttsops.errors import DataError


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def tone(path: Path, freq: float) -> None:
    t = np.arange(11025) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 22050, subtype="PCM_16")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    ds = tmp_path / "data" / "ds"
    (ds / "wavs").mkdir(parents=True)
    for i in range(3):
        tone(ds / "wavs" / f"c{i}.wav", 200 + 50 * i)
    (ds / "metadata.csv").write_text("".join(f"c{i}|clip {i}|clip {i}\n" for i in range(3)))
    return ds


def test_version_change_checkout_round_trip(dataset, tmp_path, capsys):
    remote = tmp_path / "remote"
    assert dvc_version(dataset) is None  # not versioned yet
    assert ttsops_main(["data", "version", str(dataset), "--remote", str(remote)]) == 0
    v1 = capsys.readouterr().out.strip().splitlines()[-1]
    dvc_file = dataset.parent / "ds.dvc"
    assert len(v1) == 32 and yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] == f"{v1}.dir"
    assert (dataset.parent / ".dvc").is_dir() and any(p.is_file() for p in remote.rglob("*"))
    assert dvc_version(dataset) == v1
    first = snapshot(dataset)
    (dataset / ".mel_cache").mkdir()  # train.py's cache inside the dataset is not data
    (dataset / ".mel_cache" / "x.npy").write_bytes(b"cache")
    assert dvc_version(dataset) == v1
    shutil.rmtree(dataset / ".mel_cache")

    tone(dataset / "wavs" / "c0.wav", 999)  # changed bytes
    (dataset / "wavs" / "c1.wav").unlink()  # deleted
    tone(dataset / "wavs" / "c9.wav", 123)  # added
    (dataset / "metadata.csv").write_text("c0|changed|changed\nc2|clip 2|clip 2\nc9|new|new\n")
    assert dvc_version(dataset) is None  # differs from its version: name none
    v2 = version_dataset(dataset)
    second = snapshot(dataset)
    assert v2.id != v1 and v2.remote == "ttsops" and [v["id"] for v in list_versions(dataset)] == [v1, v2.id]

    restored = checkout_version(v1[:8], dataset)
    assert restored.id == v1 and snapshot(dataset) == first
    assert dvc_version(dataset) == v1

    shutil.rmtree(dataset.parent / ".dvc" / "cache")  # only the remote has the objects now
    assert ttsops_main(["data", "checkout", v2.id, str(dataset)]) == 0
    assert snapshot(dataset) == second and dvc_version(dataset) == v2.id

    with pytest.raises(DataError, match="not found.*known"):
        checkout_version("deadbeef", dataset)


def test_version_without_push_and_errors(dataset, tmp_path):
    v = version_dataset(dataset, push=False)
    assert v.remote is None and dvc_version(dataset, verify=False) == v.id
    with pytest.raises(DataError, match="not found"):
        version_dataset(tmp_path / "data" / "missing")
    with pytest.raises(DataError, match="not inside"):
        version_dataset(dataset, repo=tmp_path / "elsewhere")
    assert ttsops_main(["data", "checkout", "0123456789", str(tmp_path / "nowhere" / "ds")]) == 2


def test_checkout_copy_restores_a_version_elsewhere_and_leaves_the_source_alone(dataset, tmp_path):
    from ttsops.data.versioning import checkout_copy

    v1 = version_dataset(dataset, remote_url=str(tmp_path / "remote")).id
    first = snapshot(dataset)
    tone(dataset / "wavs" / "c0.wav", 999)  # the working copy moves on, unversioned
    edited = snapshot(dataset)
    copy = checkout_copy(v1, dataset, tmp_path / "work" / "data" / "copy")
    assert copy.id == v1 and copy.dataset == (tmp_path / "work" / "data" / "copy").resolve()
    assert snapshot(copy.dataset) == first and snapshot(dataset) == edited
    assert dvc_version(copy.dataset) == v1

    shutil.rmtree(dataset.parent / ".dvc" / "cache")  # the shared cache is gone: the remote has the objects
    again = checkout_copy(v1, dataset, tmp_path / "again" / "ds")
    assert snapshot(again.dataset) == first
    with pytest.raises(DataError, match="not found.*known"):
        checkout_copy("deadbeef", dataset, tmp_path / "x" / "ds")
