"""Plumbing shared by the data-plane steps: JSON-lines manifests, atomic writes, fingerprints,
rejection reasons, and the process-pool map with a progress bar.

Every step (segment, transcribe, build) works per entry and never lets one bad file stop a batch:
a failure becomes a record with a ``reason`` from :class:`Reason`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from ttsops.errors import DataError
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Reason(StrEnum):
    """Why a file or clip did not make it into the dataset (the values are what manifests hold)."""

    UNREADABLE = "unreadable"  # not audio, corrupt, or a format the decoder lacks
    EMPTY = "empty"  # decodes to zero samples
    NO_SPEECH = "no_speech"  # silence or noise only
    TOO_SHORT = "too_short"  # shorter than min_clip_s after merging
    TOO_LONG = "too_long"  # longer than max_clip_s with no pause to cut at
    TRUNCATED = "truncated"  # speech runs into the start or end of the file (a cut word)
    CLIPPED = "clipped"  # too many samples at full scale
    TOO_QUIET = "too_quiet"  # speech level below min_level_dbfs
    TOO_NOISY = "too_noisy"  # estimated SNR below min_snr_db
    LOW_CONFIDENCE = "low_confidence"  # ASR confidence below the threshold
    EMPTY_TRANSCRIPT = "empty_transcript"  # ASR heard no words
    MISSING_CLIP = "missing_clip"  # the manifest names a clip file that is gone


# --- JSON lines -------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a crash mid-append) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a torn line", path, n)
    return out


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    return atomic_write_text(path, "".join(dumps(r) + "\n" for r in records))


# --- identities -------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """Cheap change detector for resumability: size and modification time (ns)."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def config_hash(config: Any) -> str:
    """Stable short hash of a dataclass/dict config: changing a setting redoes the work."""
    data = config if isinstance(config, dict) else vars(config)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_key(relpath: str | Path) -> str:
    """A file-system and metadata.csv safe id stem for a source file (no '|', no '/')."""
    p = Path(relpath)
    stem = str(p.with_suffix("")) if p.suffix else str(p)
    return _UNSAFE.sub("_", stem.replace(os.sep, "__")).strip("._") or "source"


# --- sources and per-source results ---------------------------------------------------------
def discover_sources(inputs: list[str | Path]) -> list[tuple[Path, str, str]]:
    """(path, source name, unique key) for each input file and each non-hidden file under each
    input directory, sorted; keys are ``safe_key`` of the name, de-duplicated with ``_2``, ``_3``."""
    found: list[tuple[Path, str]] = []
    for inp in map(Path, inputs):
        if inp.is_dir():
            files = (p for p in inp.rglob("*") if p.is_file())
            found += sorted(
                (p, p.relative_to(inp).as_posix())
                for p in files
                if not any(x.startswith(".") for x in p.relative_to(inp).parts)
            )
        elif inp.exists():
            found.append((inp, inp.name))
        else:
            raise DataError(f"input not found: {inp}")
    seen: dict[str, int] = {}
    out = []
    for path, name in found:
        key = safe_key(name)
        seen[key] = seen.get(key, 0) + 1
        out.append((path, name, key if seen[key] == 1 else f"{key}_{seen[key]}"))
    return out


class PartStore:
    """One JSON file per source (``<dir>/<key>.json``: a stamp plus its records), written atomically
    when the source is done. A part is current when its stamp matches and its kept files exist
    (``path`` relative to ``root``), so an interrupted or repeated run redoes only what is missing."""

    def __init__(self, directory: Path, root: Path):
        self.dir, self.root = directory, root
        self.dir.mkdir(parents=True, exist_ok=True)

    def _load(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def is_current(self, key: str, stamp: dict[str, str]) -> bool:
        data = self._load(key)
        if data is None or any(data.get(k) != v for k, v in stamp.items()):
            return False
        return all((self.root / r["path"]).is_file() for r in data["records"] if r.get("kept"))

    def write(self, key: str, stamp: dict[str, str], records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.dir / f"{key}.json", json.dumps({**stamp, "records": records}))

    def records(self, key: str) -> list[dict[str, Any]]:
        data = self._load(key)
        return data["records"] if data else []


def count_reasons(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """{reason: count} of the records that were not kept, sorted by reason."""
    counts: dict[str, int] = {}
    for r in records:
        if not r.get("kept"):
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return dict(sorted(counts.items()))


def speech_lost_s(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """{reason: seconds of speech} in the records that were not kept (``speech_end -
    speech_start``; file-level rejections such as ``unreadable`` have no speech times and count 0)."""
    lost: dict[str, float] = {}
    for r in records:
        if not r.get("kept"):
            span = float(r.get("speech_end", 0.0)) - float(r.get("speech_start", 0.0))
            lost[r["reason"]] = lost.get(r["reason"], 0.0) + max(span, 0.0)
    return {k: round(v, 2) for k, v in sorted(lost.items())}


# --- parallel map -----------------------------------------------------------------------------
def parallel_map(
    fn: Callable[[T], R],
    items: list[T],
    workers: int = 1,
    desc: str = "working",
    progress: bool = False,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` as they finish, in a pool of ``workers`` processes.

    ``workers <= 1`` runs in this process (no pickling, easy to debug). ``fn`` must be a module-level
    function and should not raise: turn per-item failures into result records. At most
    ``2 * workers`` items are in flight, so yielded results can be persisted as they arrive and an
    interrupted run loses little.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(desc, total=len(items))
        if workers <= 1:
            if initializer is not None:
                initializer(*initargs)
            for item in items:
                result = fn(item)
                bar.advance(task)
                yield item, result
            return
        # forkserver, not fork: the progress bar's refresh thread may hold a lock at fork time
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
            pending: dict[Future[R], T] = {}
            queue = iter(items)
            for item in queue:
                pending[pool.submit(fn, item)] = item
                if len(pending) >= 2 * workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    bar.advance(task)
                    yield item, fut.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(fn, nxt)] = nxt
