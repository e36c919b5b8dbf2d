"""Dataset versions with DVC: ``version`` snapshots a dataset directory, ``checkout`` restores one.

The DVC project ("repo") is the nearest directory above the dataset holding ``.dvc/``, else the
dataset's parent, initialised with ``dvc init --no-scm`` (ttsops never touches git: the lead's
repository commits stay its own business). ``dvc add DATASET`` writes ``DATASET.dvc`` beside it;
the **version id** is that file's ``md5`` (the directory hash, without DVC's ``.dir`` suffix). Every
versioned ``.dvc`` file is also kept under ``<repo>/.ttsops/versions/<dataset>/<id>.dvc`` with a
``versions.jsonl`` log, so ``checkout ID`` can bring any version back without git, from the local
cache or, when that lacks objects, from the remote (``dvc pull``).

``.dvcignore`` gets ``DVCIGNORE`` (train.py's ``.mel_cache/`` lives inside the dataset and is
not data: without it the first training run would make the dataset look modified).

Remote: ``remote_url`` when given (any DVC URL: a path, s3://, ssh://, ...), else the repo's
configured default, else a local directory ``<repo>/.ttsops/dvc-remote``. The dvc CLI of this
interpreter (``python -m dvc``) runs as a subprocess with ``DVC_NO_ANALYTICS=1``.

``dvc_version(dir)`` is the DVC id, or None when the dataset is not versioned or differs from its
last version (``dvc status``), so a run never names data it did not see. ``dataset_version(dir)``
is the one policy train.py and the tuner record (MLflow tag, registry version, ``best_model.json``):
the DVC id when there is one, else ``sha256:<content fingerprint>``.

    ttsops data version DATASET_DIR [--remote URL] [--no-push]
    ttsops data checkout VERSION DATASET_DIR

``checkout_copy`` restores a version into another directory (its own DVC repo sharing the source's
cache and remote), leaving the source's working copy alone: ``ttsops reproduce`` uses it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ttsops.data.manifest import dumps, read_jsonl
from ttsops.errors import DataError
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)

REMOTE_NAME = "ttsops"
STORE = ".ttsops"
# derived files inside a dataset that are not data: train.py's mel cache, atomic-write temp files
DVCIGNORE = [".mel_cache/", ".*.tmp"]


@dataclass(frozen=True)
class DatasetVersion:
    id: str
    dataset: Path
    repo: Path
    dvc_file: Path
    files: int
    size: int
    remote: str | None


def run_dvc(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dvc ARGS`` in ``cwd``; a failure becomes a DataError with DVC's last words."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise DataError(f"dvc {' '.join(args)} failed in {cwd}: {lines[-1] if lines else proc.returncode}")
    return proc


def find_repo(start: Path) -> Path | None:
    for d in [start, *start.parents]:
        if (d / ".dvc" / "config").is_file():
            return d
    return None


def _dataset_and_repo(dataset_dir: str | Path, repo: str | Path | None) -> tuple[Path, Path]:
    ds = Path(dataset_dir).resolve()
    root = Path(repo).resolve() if repo else (find_repo(ds.parent) or ds.parent)
    if root != ds.parent and root not in ds.parents:
        raise DataError(f"dataset {ds} is not inside the DVC repo {root}")
    return ds, root


def _read_dvc_file(path: Path) -> tuple[str, int, int]:
    try:
        out = yaml.safe_load(path.read_text())["outs"][0]
        return str(out["md5"]).removesuffix(".dir"), int(out.get("nfiles", 1)), int(out.get("size", 0))
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"cannot read DVC file {path}: {e}") from e


def _ensure_remote(root: Path, remote_url: str | None) -> str:
    """Configure ``remote_url`` (or a local default when none is set) as the default remote."""
    if remote_url is None:
        try:
            return run_dvc(["remote", "default"], root).stdout.strip()
        except DataError:  # "No default remote set"
            pass
        remote_url = str(root / STORE / "dvc-remote")
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    elif "://" not in remote_url:
        remote_url = str(Path(remote_url).resolve())
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    run_dvc(["remote", "add", "--force", "--default", REMOTE_NAME, remote_url], root)
    return REMOTE_NAME


def _ensure_dvcignore(root: Path) -> None:
    path = root / ".dvcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    missing = [p for p in DVCIGNORE if p not in lines]
    if missing:
        atomic_write_text(path, "\n".join([*lines, *missing]) + "\n")


def version_dataset(
    dataset_dir: str | Path, repo: str | Path | None = None, remote_url: str | None = None, push: bool = True
) -> DatasetVersion:
    """Snapshot ``dataset_dir`` with DVC (init when needed, add, push); returns its version."""
    ds, root = _dataset_and_repo(dataset_dir, repo)
    if not ds.is_dir():
        raise DataError(f"dataset directory not found: {ds}")
    if not (root / ".dvc").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        run_dvc(["init", "--no-scm", "-q"], root)
        logger.info("initialised a DVC repo (no git) at %s", root)
    _ensure_dvcignore(root)
    remote = _ensure_remote(root, remote_url) if push or remote_url else None
    rel = ds.relative_to(root).as_posix()
    run_dvc(["add", "-q", rel], root)
    dvc_file = ds.parent / f"{ds.name}.dvc"
    vid, nfiles, size = _read_dvc_file(dvc_file)
    if push:
        run_dvc(["push", "-q", "-r", remote or REMOTE_NAME, dvc_file.relative_to(root).as_posix()], root)
    store = root / STORE / "versions" / rel.replace("/", "__")
    store.mkdir(parents=True, exist_ok=True)
    if not (store / f"{vid}.dvc").is_file():
        shutil.copyfile(dvc_file, store / f"{vid}.dvc")
        with (store / "versions.jsonl").open("a", encoding="utf-8") as f:
            f.write(
                dumps(
                    {
                        "id": vid,
                        "dataset": rel,
                        "files": nfiles,
                        "size": size,
                        "remote": remote,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                )
                + "\n"
            )
    logger.info(
        "dataset %s is version %s (%d files, %d bytes%s)",
        ds,
        vid,
        nfiles,
        size,
        f", pushed to {remote}" if push else "",
    )
    return DatasetVersion(vid, ds, root, dvc_file, nfiles, size, remote)


def list_versions(dataset_dir: str | Path, repo: str | Path | None = None) -> list[dict[str, object]]:
    ds, root = _dataset_and_repo(dataset_dir, repo)
    return read_jsonl(
        root / STORE / "versions" / ds.relative_to(root).as_posix().replace("/", "__") / "versions.jsonl"
    )


def _version_file(version: str, ds: Path, root: Path) -> Path:
    """The stored ``.dvc`` file of ``version`` (an id, its ``.dir`` form, or a unique prefix >= 6)."""
    if not (root / ".dvc").is_dir():
        raise DataError(f"no DVC repo at {root}: version the dataset first (ttsops data version {ds})")
    want = version.strip().removesuffix(".dir")
    store = root / STORE / "versions" / ds.relative_to(root).as_posix().replace("/", "__")
    matches = sorted(store.glob(f"{want}*.dvc")) if len(want) >= 6 else []
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(store.glob("*.dvc"))) or "none"
        raise DataError(
            f"dataset version {version!r} {'is ambiguous' if matches else 'not found'} for {ds} (known: {known})"
        )
    return matches[0]


def checkout_version(version: str, dataset_dir: str | Path, repo: str | Path | None = None) -> DatasetVersion:
    """Restore ``dataset_dir`` to ``version`` (an id, its ``.dir`` form, or a unique prefix >= 6)."""
    ds, root = _dataset_and_repo(dataset_dir, repo)
    stored = _version_file(version, ds, root)
    dvc_file = ds.parent / f"{ds.name}.dvc"
    atomic_write_text(dvc_file, stored.read_text())
    target = dvc_file.relative_to(root).as_posix()
    try:
        run_dvc(["checkout", "--force", "-q", target], root)
    except DataError:  # objects missing from the local cache: fetch them from the remote
        logger.info("version %s is not fully in the local cache; pulling from the remote", stored.stem)
        run_dvc(["pull", "--force", "-q", target], root)
    vid, nfiles, size = _read_dvc_file(dvc_file)
    logger.info("dataset %s checked out at version %s", ds, vid)
    return DatasetVersion(vid, ds, root, dvc_file, nfiles, size, None)


def checkout_copy(
    version: str, source_dataset: str | Path, dest_dataset: str | Path, repo: str | Path | None = None
) -> DatasetVersion:
    """Restore ``version`` of ``source_dataset`` into ``dest_dataset`` without touching the source.

    ``dest_dataset``'s parent becomes a DVC repo of its own that shares the source repo's cache (and
    its default remote, for objects the cache lacks), holds that one version, and checks it out
    with ``checkout_version``: what ``ttsops reproduce`` gives train.py."""
    src, root = _dataset_and_repo(source_dataset, repo)
    stored = _version_file(version, src, root)
    dest = Path(dest_dataset).resolve()
    droot = dest.parent
    if not (droot / ".dvc").is_dir():
        droot.mkdir(parents=True, exist_ok=True)
        run_dvc(["init", "--no-scm", "-q"], droot)
    _ensure_dvcignore(droot)
    run_dvc(["cache", "dir", "--local", run_dvc(["cache", "dir"], root).stdout.strip()], droot)
    remote = _default_remote_url(root)
    if remote:
        run_dvc(["remote", "add", "--force", "--default", REMOTE_NAME, remote], droot)
    spec = yaml.safe_load(stored.read_text())
    spec["outs"][0]["path"] = dest.name  # the version file names its directory relative to itself
    store = droot / STORE / "versions" / dest.name
    store.mkdir(parents=True, exist_ok=True)
    atomic_write_text(store / stored.name, yaml.safe_dump(spec, sort_keys=False))
    return checkout_version(stored.stem, dest, droot)


def _default_remote_url(root: Path) -> str | None:
    try:
        name = run_dvc(["remote", "default"], root).stdout.strip()
    except DataError:  # "No default remote set"
        return None
    for line in run_dvc(["remote", "list"], root).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            url = parts[1]
            return url if "://" in url or Path(url).is_absolute() else str((root / ".dvc" / url).resolve())
    return None


def dataset_version(dataset_dir: str | Path | None) -> str | None:
    """What a run records as its dataset's version: the DVC id, else ``sha256:<fingerprint>`` of its
    contents; None (logged) when there is no dataset or it cannot be read. Never raises."""
    if not dataset_dir:
        return None
    try:
        from ttsops.data.dataset import dataset_fingerprint  # torch: only when a version is asked for

        return dvc_version(dataset_dir) or f"sha256:{dataset_fingerprint(dataset_dir)}"
    except Exception as e:  # versioning is informative; never fatal to training or tuning
        logger.warning("dataset %s: no version fingerprint (%s)", dataset_dir, e)
        return None


def dvc_version(dataset_dir: str | Path, verify: bool = True) -> str | None:
    """The DVC version id of ``dataset_dir``; None when it is not versioned, or (``verify``) when
    its contents differ from that version (``dvc status``, ~1-2 s)."""
    ds = Path(dataset_dir).resolve()
    dvc_file = ds.parent / f"{ds.name}.dvc"
    if not dvc_file.is_file():
        return None
    try:
        vid, _, _ = _read_dvc_file(dvc_file)
        if verify:
            root = find_repo(ds.parent)
            if root is None:
                return None
            status = json.loads(
                run_dvc(["status", "--json", dvc_file.relative_to(root).as_posix()], root).stdout or "{}"
            )
            if status:
                logger.warning(
                    "dataset %s differs from its DVC version %s (%s): not naming a version", ds, vid, status
                )
                return None
    except (DataError, json.JSONDecodeError, subprocess.TimeoutExpired) as e:
        logger.warning("cannot read the DVC version of %s: %s", ds, e)
        return None
    return vid
