"""The refusals before a rerun: other code, other data, a DDP run; and the warnings that only cost
exactness. Each refusal is one line naming the recorded value and the one found."""

from __future__ import annotations

import json

import pytest

from ttsops.data.dataset import dataset_fingerprint
from ttsops.errors import ReproduceError
from ttsops.infra.gitinfo import GitState
from ttsops.infra.tracking import Tag
from ttsops.reproduce.checks import (
    check_code,
    check_single_process,
    code_difference,
    environment_warnings,
    prepare_dataset,
)
from ttsops.reproduce.record import parse_record

A, B = "a" * 40, "b" * 40
CLEAN = GitState(A)
DIRTY = GitState(A, ("ttsops/train/train.py",), "1" * 64)


@pytest.mark.parametrize(
    ("commit", "dirty", "here", "fragment"),
    [
        (A, None, CLEAN, None),
        (A, "1" * 16, DIRTY, None),  # the same local changes
        (A, None, GitState(B), f"the run was made at commit {A[:12]}, this tree is at {B[:12]} (git checkout {A[:12]})"),
        (A, None, DIRTY, f"this tree has local changes that the run's commit {A[:12]} did not have: "
                         f"{A[:12]} with local changes to ttsops/train/train.py"),
        (A, "2" * 16, CLEAN, f"the run was made from {A[:12]} with local changes (sha256 {'2' * 16}) that this tree "
                             "does not have"),
        (A, "2" * 16, DIRTY, f"the run's local changes on {A[:12]} (sha256 {'2' * 16}) differ from this tree's "
                             f"(sha256 {'1' * 16})"),
        (A, None, GitState(None), f"ttsops here is not a git checkout: cannot check that it is the run's commit {A[:12]}"),
        ("unknown", None, CLEAN, "the run recorded no git commit (its train.py ran outside a git checkout)"),
    ],
)
def test_code_difference_table(commit, dirty, here, fragment):
    got = code_difference(commit, dirty, here)
    assert got == fragment if fragment is None else got is not None and got.startswith(fragment), got


def record(**tags):
    base = {Tag.GIT_COMMIT: A, Tag.DATASET: "/nonexistent/ds", Tag.DATASET_FINGERPRINT: "f" * 16,
            Tag.DATASET_VERSION: "unversioned"}
    return parse_record("r1", "0", "gen", "FINISHED", {"epochs": "1"}, {**base, **tags}, "{}", {})


def test_other_code_is_refused_unless_allowed():
    with pytest.raises(ReproduceError, match=r"^run r1 \(gen\): the run was made at commit a{12}, this tree is at "
                                             r"b{12} .*--allow-other-commit runs it anyway$"):
        check_code(record(), GitState(B), allow=False)
    assert check_code(record(), GitState(B), allow=True).startswith("the run was made at commit")
    assert check_code(record(), CLEAN, allow=False) is None


def test_a_ddp_run_is_refused():
    check_single_process(record())
    check_single_process(record(**{Tag.WORLD_SIZE: "1"}))
    with pytest.raises(ReproduceError, match="trained on 2 DDP processes"):
        check_single_process(record(**{Tag.WORLD_SIZE: "2"}))


def _dataset(root):
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("a|Hello there.\n")
    (root / "wavs" / "a.wav").write_bytes(b"RIFF0000WAVE" + bytes(range(200)))
    return root


def test_changed_data_is_refused_naming_both_fingerprints(tmp_path):
    ds = _dataset(tmp_path / "ds")
    recorded = dataset_fingerprint(ds)
    r = record(**{Tag.DATASET: str(ds), Tag.DATASET_FINGERPRINT: recorded, Tag.DATASET_VERSION: f"sha256:{recorded}"})
    assert prepare_dataset(r, tmp_path / "work") == ds  # never versioned: the recorded directory itself
    wav = ds / "wavs" / "a.wav"
    data = bytearray(wav.read_bytes())
    data[100] ^= 1  # one byte
    wav.write_bytes(bytes(data))
    with pytest.raises(ReproduceError) as e:
        prepare_dataset(r, tmp_path / "work")
    msg = str(e.value)
    assert msg.startswith(f"the run's dataset (never versioned with DVC) at {ds}: content fingerprint ")
    assert f"is not the recorded {recorded} (tag dataset_fingerprint)" in msg and "\n" not in msg
    copy = _dataset(tmp_path / "copy")  # the run's data elsewhere: accepted
    assert prepare_dataset(r, tmp_path / "work", dataset=copy) == copy
    (copy / "metadata.csv").write_text("a|Hello there!\n")
    with pytest.raises(ReproduceError, match=f"^--dataset at {copy}: content fingerprint"):
        prepare_dataset(r, tmp_path / "work", dataset=copy)


def test_differences_that_only_cost_exactness_are_warnings():
    libs = {"python": "3.11.7", "torch": "2.13.0"}
    r = record(**{Tag.TORCH_THREADS: "1", Tag.DEVICE: "cpu (x86_64, AMD EPYC)",
                  Tag.LIBRARIES: json.dumps({"python": "3.11.7", "torch": "2.12.0"}),
                  Tag.RESUMED_WITH: "torch_num_threads: 1 -> 2"})
    w = environment_warnings(r, 2, "cpu (x86_64, Intel Xeon)", libs)
    assert w[0].startswith("2 CPU threads instead of the recorded 1")
    assert w[1].startswith("device cpu (x86_64, Intel Xeon) instead of the recorded cpu (x86_64, AMD EPYC)")
    assert w[2] == "other library versions: torch 2.12.0 -> 2.13.0"
    assert w[3].startswith("the run was resumed with other settings (torch_num_threads: 1 -> 2)")
    same = environment_warnings(r, 1, "cpu (x86_64, AMD EPYC)", {"torch": "2.12.0"})
    assert [w.split(" (")[0] for w in same] == ["the run was resumed with other settings"]
