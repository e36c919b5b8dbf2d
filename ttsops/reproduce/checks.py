"""Before a rerun: is this the run's code, can its data be had as it was, what else differs.

Each check either passes, raises ReproduceError with one line naming what differs (the recorded
value and the one found), or, where a difference only costs exactness (threads, hardware,
library versions), returns a warning line for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from ttsops.errors import DataError, ReproduceError
from ttsops.infra.gitinfo import UNKNOWN, GitState
from ttsops.infra.tracking import Tag
from ttsops.reproduce.record import RunRecord

ALLOW = "--allow-other-commit runs it anyway"


def code_difference(commit: str, dirty: str | None, here: GitState) -> str | None:
    """How the tree ``here`` differs from the recorded commit and local changes; None if it does not.

    ``dirty`` is the sha256 prefix of the run's local changes (None: its tree was clean)."""
    if commit == UNKNOWN:
        return "the run recorded no git commit (its train.py ran outside a git checkout)"
    if here.commit is None:
        return f"ttsops here is not a git checkout: cannot check that it is the run's commit {commit[:12]}"
    if here.commit != commit:
        return f"the run was made at commit {commit[:12]}, this tree is at {here.commit[:12]} (git checkout {commit[:12]})"
    mine = (here.changes_sha256 or "")[:16] or None
    if dirty is None and mine is not None:
        return f"this tree has local changes that the run's commit {commit[:12]} did not have: {here.describe()}"
    if dirty is not None and mine is None:
        return f"the run was made from {commit[:12]} with local changes (sha256 {dirty}) that this tree does not have"
    if dirty is not None and dirty != mine:
        return (f"the run's local changes on {commit[:12]} (sha256 {dirty}) differ from this tree's "
                f"(sha256 {mine}): {here.describe()}")
    return None


def check_single_process(record: RunRecord) -> None:
    """A DDP run's batches depend on its world size: this reruns single-process runs only."""
    world = record.tags.get(Tag.WORLD_SIZE, "1")
    if world != "1":
        raise ReproduceError(f"{record.label()} trained on {world} DDP processes (torchrun); ttsops reproduce "
                             "reruns single-process runs only")


def check_code(record: RunRecord, here: GitState, allow: bool) -> str | None:
    """None when the code is the run's; the difference as a warning with ``allow``; else refuse."""
    diff = code_difference(record.commit, record.dirty, here)
    if diff is None:
        return None
    if not allow:
        raise ReproduceError(f"{record.label()}: {diff}; {ALLOW}")
    return diff


def check_fingerprint(path: Path, recorded: str, what: str) -> Path:
    """``path`` if its content fingerprint is the recorded one; else refuse naming both."""
    from ttsops.data.dataset import dataset_fingerprint, read_metadata

    read_metadata(path)  # DataError naming what is missing
    got = dataset_fingerprint(path)
    if got != recorded:
        raise ReproduceError(f"{what} at {path}: content fingerprint {got} is not the recorded {recorded} "
                             f"(tag {Tag.DATASET_FINGERPRINT}): the data changed since the run")
    return path


def prepare_dataset(record: RunRecord, work: Path, dataset: Path | None = None, data_repo: Path | None = None) -> Path:
    """The run's data, checked against its fingerprint: ``dataset`` when given; else the recorded
    DVC version restored under ``work/data/`` from the recorded dataset's DVC repo (or ``data_repo``)
    without touching it; else, for data never versioned, the recorded directory itself."""
    recorded = record.tags[Tag.DATASET_FINGERPRINT]
    if dataset is not None:
        return check_fingerprint(dataset, recorded, "--dataset")
    version, source = record.tags[Tag.DATASET_VERSION], Path(record.tags[Tag.DATASET])
    if version == "unversioned" or version.startswith("sha256:"):
        return check_fingerprint(source, recorded, "the run's dataset (never versioned with DVC)")
    dest = work / "data" / version[:12] / source.name
    if not (dest / "metadata.csv").is_file():
        from ttsops.data.versioning import checkout_copy

        try:
            checkout_copy(version, source, dest, data_repo)
        except DataError as e:
            raise ReproduceError(f"{record.label()}: dataset version {version} cannot be restored: {e}") from None
    return check_fingerprint(dest, recorded, f"dataset version {version}")


def environment_warnings(record: RunRecord, threads: int | None, here_device: str, libraries: dict[str, str]) -> list[str]:
    """What differs from the run but only costs bit-exactness (docs/train_contract.md, "Reproducibility")."""
    out = []
    if record.threads is not None and threads is not None and threads != record.threads:
        out.append(f"{threads} CPU threads instead of the recorded {record.threads}: float sums run in another "
                   "order, expect differences within the tolerance")
    device = record.tags.get(Tag.DEVICE)
    if device and device.partition(" ")[2] != here_device.partition(" ")[2]:  # the hardware, not the index
        out.append(f"device {here_device} instead of the recorded {device}: expect differences within the tolerance")
    try:
        recorded_libs = json.loads(record.tags.get(Tag.LIBRARIES, "{}"))
    except json.JSONDecodeError:
        recorded_libs = {}
    changed = [f"{k} {recorded_libs[k]} -> {v}" for k, v in libraries.items() if k in recorded_libs and recorded_libs[k] != v]
    if changed:
        out.append(f"other library versions: {', '.join(changed)}")
    for tag, what in ((Tag.RESUMED_WITH, "settings"), (Tag.RESUMED_HPARAMS, "hparams")):
        if record.tags.get(tag):
            out.append(f"the run was resumed with other {what} ({record.tags[tag]}): rerun with those it started with")
    return out
