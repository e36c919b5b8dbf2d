"""Training data: LJSpeech layout reader, deterministic split, on-disk mel cache, length buckets.

Layout: ``DIR/metadata.csv`` with ``id|text`` or ``id|text|normalized`` lines and ``DIR/wavs/<id>.wav``.
The mel cache lives in ``DIR/.mel_cache/<mel params hash>/<audio sha256>.npy``: a changed file or
changed mel parameters never reuse a stale mel, and the same audio under a new name does.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from ttsops.audio.io import load_audio
from ttsops.audio.mel import MEL_PAD, MelConfig, MelExtractor
from ttsops.errors import DataError
from ttsops.infra.atomic import atomic_write
from ttsops.text.cleaners import english_cleaners
from ttsops.text.frontend import TextFrontend, text_frontend
from ttsops.text.symbols import PAD_ID, text_to_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str  # normalised
    wav: Path
    sha256: str
    duration: float


def read_metadata(root: str | Path) -> list[tuple[str, str]]:
    root = Path(root)
    meta = root / "metadata.csv"
    if not root.is_dir():
        raise DataError(f"dataset directory not found: {root}")
    if not meta.is_file():
        raise DataError(f"dataset has no metadata.csv: {meta}")
    try:
        text_lines = meta.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        line_no = meta.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{meta}:{line_no}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset "
                        f"{e.start}); save metadata.csv as UTF-8") from None
    rows = []
    for n, line in enumerate(text_lines, 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0]:
            raise DataError(f"{meta}:{n}: expected 'id|text[|normalized]', got {line[:60]!r}")
        text = parts[2] if len(parts) > 2 and parts[2].strip() else english_cleaners(parts[1])
        rows.append((parts[0], text))
    if not rows:
        raise DataError(f"{meta}: no utterances")
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(root: str | Path) -> str:
    """Content hash of metadata.csv and every wav (order-independent): what a run records."""
    root = Path(root)
    h = hashlib.sha256((root / "metadata.csv").read_bytes())
    for wav in sorted((root / "wavs").glob("*.wav")):
        h.update(wav.name.encode())
        h.update(_sha256(wav).encode())
    return h.hexdigest()[:16]


def load_utterances(root: str | Path, min_s: float, max_s: float) -> list[Utterance]:
    """Read metadata and filter clips outside [min_s, max_s] or missing, logging the counts."""
    root = Path(root)
    utts, dropped = [], {"missing": 0, "too_short": 0, "too_long": 0, "unreadable": 0, "empty_text": 0}
    for uid, text in read_metadata(root):
        wav = root / "wavs" / f"{uid}.wav"
        if not wav.is_file():
            dropped["missing"] += 1
            continue
        try:
            dur = sf.info(str(wav)).duration
        except (sf.LibsndfileError, RuntimeError):
            dropped["unreadable"] += 1
            continue
        if not text_to_ids(text, clean=False)[:-1]:
            dropped["empty_text"] += 1
        elif dur < min_s:
            dropped["too_short"] += 1
        elif dur > max_s:
            dropped["too_long"] += 1
        else:
            utts.append(Utterance(uid, text, wav, _sha256(wav), dur))
    if any(dropped.values()):
        logger.info("dataset %s: kept %d clips, dropped %s", root, len(utts), {k: v for k, v in dropped.items() if v})
    if not utts:
        raise DataError(f"dataset {root}: no usable clips (dropped: {dropped})")
    return utts


SPLIT_RULE = "sha1-id/1"  # bump when split() changes: runs record it (ttsops reproduce compares)


def split(utts: list[Utterance], val_fraction: float) -> tuple[list[Utterance], list[Utterance]]:
    """Deterministic split by a hash of the id: adding clips never moves an old clip across."""
    keyed = sorted(utts, key=lambda u: hashlib.sha1(u.id.encode()).hexdigest())
    n_val = min(len(utts) - 1, max(1, round(val_fraction * len(utts)))) if len(utts) > 1 else 0
    val_ids = {u.id for u in keyed[:n_val]}
    return [u for u in utts if u.id not in val_ids], [u for u in utts if u.id in val_ids]


def describe_split(train: list[Utterance], val: list[Utterance], val_fraction: float) -> str:
    """The split rule and its outcome, as a run records it (the ids' hash tells two splits apart)."""
    ids = hashlib.sha256("\n".join(sorted(u.id for u in val)).encode()).hexdigest()[:16]
    return (f"{SPLIT_RULE}: the first round(val_fraction * n) clips by sha1(id) validate; val_fraction="
            f"{val_fraction}: {len(train)} train, {len(val)} val, val ids sha256 {ids}")


class MelDataset(Dataset):
    """(text ids, log-mel) pairs; mels computed once into the cache and kept in memory."""

    def __init__(self, utts: list[Utterance], mel_cfg: MelConfig, cache_dir: Path, progress: bool = False,
                 frontend: TextFrontend | None = None) -> None:
        self.utts = utts
        self.mel_cfg = mel_cfg
        self.cache = cache_dir / mel_cfg.fingerprint()
        self.cache.mkdir(parents=True, exist_ok=True)
        frontend = frontend or text_frontend("characters")
        self.texts = [torch.tensor(ids, dtype=torch.long) for ids in frontend.to_ids([u.text for u in utts], clean=False)]
        self.mels = self._load_all(progress)

    def _load_all(self, progress: bool) -> list[torch.Tensor]:
        from rich.progress import Progress

        extractor = None  # made at the first missing mel: its filterbank imports librosa (seconds per process)
        mels = []
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("mel features", total=len(self.utts))
            for u in self.utts:
                path = self.cache / f"{u.sha256}.npy"
                if path.exists():
                    mel = np.load(path)
                else:
                    wav, _ = load_audio(u.wav, self.mel_cfg.sample_rate)
                    extractor = extractor or MelExtractor(self.mel_cfg)
                    mel = extractor(wav).numpy()
                    atomic_write(path, functools.partial(_save_npy, array=mel))  # runs may share a corpus
                mels.append(torch.from_numpy(mel))
                bar.advance(task)
        return mels

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.texts[i], self.mels[i]

    def frames(self, i: int) -> int:
        return int(self.mels[i].shape[1])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length (less padding, fewer wasted decoder steps), shuffled per epoch
    from ``seed + epoch`` (so a resumed run sees the same order), sharded across DDP ranks."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 bucket_factor: int = 8) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rank, self.world, self.bucket_factor = rank, world, bucket_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def describe(self) -> str:
        """The order rule, as a run records it (bump the version when ``_batches`` changes)."""
        return (f"bucket-shuffle/1: random.Random(seed + epoch) shuffles the clips, buckets of batch_size x "
                f"{self.bucket_factor} sorted by length, batches shuffled; seed={self.seed}, "
                f"batch_size={self.batch_size}, rank {self.rank} of {self.world}")

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        chunk = self.batch_size * self.bucket_factor
        batches = []
        for s in range(0, len(idx), chunk):
            part = sorted(idx[s:s + chunk], key=lambda i: self.lengths[i])
            batches += [part[j:j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        if 0 < len(batches) < self.world:  # every rank needs a batch, or the others wait in DDP's all-reduce
            batches = (batches * self.world)[: self.world]
        n = (len(batches) // self.world) * self.world
        return batches[:n][self.rank::self.world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]], r: int) -> dict[str, torch.Tensor]:
    """Pad texts with PAD_ID and mels with log(1e-5) to a multiple of ``r`` frames."""
    text_lens = torch.tensor([len(t) for t, _ in batch])
    mel_lens = torch.tensor([m.shape[1] for _, m in batch])
    n_max = int(text_lens.max())
    t_max = int(math.ceil(int(mel_lens.max()) / r) * r)
    text = torch.full((len(batch), n_max), PAD_ID, dtype=torch.long)
    mels = torch.full((len(batch), batch[0][1].shape[0], t_max), MEL_PAD)
    for i, (t, m) in enumerate(batch):
        text[i, : len(t)] = t
        mels[i, :, : m.shape[1]] = m
    return {"text": text, "text_lens": text_lens, "mels": mels, "mel_lens": mel_lens}


def _save_npy(f: Any, array: np.ndarray) -> None:
    np.save(f, array)
