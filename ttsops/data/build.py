"""Assemble segmented, transcribed clips into a training dataset in the LJSpeech layout.

Output (``out_dir``)::

    wavs/<id>.wav            16-bit PCM mono at ``sample_rate`` (copied byte for byte when already so)
    metadata.csv             id|text|normalized  (text: the ASR transcript, normalized: english_cleaners)
    manifest.jsonl           id, path, duration, sample_rate, sha256, transcript, normalized,
                             confidence, source, start, end (segment times in the source), split
    filelists/train.txt, filelists/val.txt   wavs/<id>.wav|normalized  (NVIDIA Tacotron2 style)
    report.json, report.png  hours, clip-length histogram, speaking rate, rejections per reason (with
                             the seconds of speech each cost), SNR of every segmented clip

The split is deterministic: clips are ordered by sha1(id) (salted when ``seed`` is set) and the
first ``val_fraction`` go to validation, so an id always lands on the same side, whatever order
clips arrive in; unsalted, it is the split ``ttsops.data.dataset.split`` makes at train time.
Re-building is idempotent: unchanged wavs are not rewritten, wavs no longer in the set are removed.

    ttsops data build SEGMENTS_DIR OUT_DIR [--val-fraction 0.05] [--include-low-confidence]
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ttsops.audio.io import load_audio, save_wav, wav_bytes
from ttsops.data.manifest import Reason, parallel_map, read_jsonl, sha256_file, speech_lost_s, write_jsonl
from ttsops.errors import ConfigError, DataError
from ttsops.infra.atomic import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    sample_rate: int = 22050
    val_fraction: float = 0.05
    seed: str = ""  # "" = the same split as ttsops.data.dataset.split (sha1 of the id)
    include_low_confidence: bool = False
    hist_bins: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class BuildSummary:
    out_dir: Path
    clips: int
    train: int
    val: int
    total_hours: float
    rejected: dict[str, int]


def split_ids(ids: list[str], val_fraction: float, seed: str = "") -> dict[str, str]:
    """{id: "train" | "val"}: the ``round(n * val_fraction)`` ids with the smallest salted hash
    (at least one when ``val_fraction > 0`` and there are two or more ids) go to validation."""
    order = sorted(ids, key=lambda i: hashlib.sha1((f"{seed}:{i}" if seed else i).encode()).hexdigest())
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    val = set(order[:n_val])
    return {i: "val" if i in val else "train" for i in ids}


def _select(transcripts: list[dict[str, Any]], cfg: BuildConfig) -> tuple[list[dict[str, Any]], Counter[str]]:
    kept, rejected = [], Counter[str]()
    for r in transcripts:
        if r.get("error"):
            rejected[r["error"]] += 1
        elif not Path(r["path"]).is_file():
            rejected[Reason.MISSING_CLIP.value] += 1
        elif not r.get("normalized", "").strip():
            rejected[Reason.EMPTY_TRANSCRIPT.value] += 1
        elif r.get("low_confidence") and not cfg.include_low_confidence:
            rejected[Reason.LOW_CONFIDENCE.value] += 1
        else:
            kept.append(r)
    return kept, rejected


def _materialise(job: tuple[str, str, int]) -> dict[str, Any]:
    """Put one clip at ``dest`` as 16-bit mono at the rate; copy the bytes when already so."""
    src, dest, sr = Path(job[0]), Path(job[1]), job[2]
    info = sf.info(str(src))
    if info.samplerate == sr and info.channels == 1 and info.subtype == "PCM_16" and info.format == "WAV":
        if not dest.is_file() or sha256_file(dest) != sha256_file(src):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        frames = info.frames
    else:
        wav, _ = load_audio(src, sr)
        if not dest.is_file() or dest.read_bytes() != wav_bytes(wav, sr):  # rebuilds leave it alone
            save_wav(dest, wav, sr)
        frames = len(wav)
    return {"sha256": sha256_file(dest), "duration": round(frames / sr, 3)}


def build(
    segments_dir: str | Path,
    out_dir: str | Path,
    transcripts: str | Path | None = None,
    cfg: BuildConfig | None = None,
    workers: int = 1,
    progress: bool = False,
) -> BuildSummary:
    """Build the dataset from ``segments_dir`` (clips + segments.jsonl + transcripts.jsonl)."""
    cfg = cfg or BuildConfig()
    seg_dir, out = Path(segments_dir), Path(out_dir)
    tpath = Path(transcripts) if transcripts else seg_dir / "transcripts.jsonl"
    if not tpath.is_file():
        raise DataError(f"no transcripts at {tpath}: run `ttsops data transcribe {seg_dir}` first")
    segments = {r["id"]: r for r in read_jsonl(seg_dir / "segments.jsonl")}
    seg_rejects = Counter(r["reason"] for r in segments.values() if not r.get("kept"))
    rows = [{**r, "path": str(_resolve(seg_dir, r["path"]))} for r in read_jsonl(tpath)]
    kept, rejected = _select(sorted(rows, key=lambda r: r["id"]), cfg)
    rejected.update(seg_rejects)
    jobs = [(r["path"], str(out / "wavs" / f"{r['id']}.wav"), cfg.sample_rate) for r in kept]
    facts = {
        Path(j[1]).stem: res
        for j, res in parallel_map(_materialise, jobs, workers, f"writing {len(jobs)} wavs", progress)
    }
    wanted = {f"{r['id']}.wav" for r in kept}
    for stale in (out / "wavs").glob("*.wav"):
        if stale.name not in wanted:
            stale.unlink()
    splits = split_ids([r["id"] for r in kept], cfg.val_fraction, cfg.seed)
    manifest = [
        _manifest_row(r, facts[r["id"]], segments.get(r["id"], {}), splits[r["id"]], cfg) for r in kept
    ]
    _write_tables(out, manifest)
    report = dataset_report(manifest, dict(rejected), cfg.hist_bins, list(segments.values()))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    plot_report(report, manifest, out / "report.png")
    splits_n = report["splits"]
    summary = BuildSummary(out, len(manifest), splits_n["train"], splits_n["val"], report["total_hours"],
                           dict(sorted(rejected.items())))  # fmt: skip
    logger.info("dataset %s: %d clips, %.3f h, rejected %s", out, summary.clips, summary.total_hours,
                summary.rejected or "none")  # fmt: skip
    return summary


def _resolve(seg_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else seg_dir / p


def _manifest_row(
    r: dict[str, Any], fact: dict[str, Any], seg: dict[str, Any], split: str, cfg: BuildConfig
) -> dict[str, Any]:
    return {
        "id": r["id"],
        "path": f"wavs/{r['id']}.wav",
        "duration": fact["duration"],
        "sample_rate": cfg.sample_rate,
        "sha256": fact["sha256"],
        "transcript": _one_line(r["text"]),
        "normalized": _one_line(r["normalized"]),
        "confidence": r["confidence"],
        "low_confidence": bool(r.get("low_confidence")),
        "backend": r.get("backend"),
        "source": seg.get("source"),
        "start": seg.get("start"),
        "end": seg.get("end"),
        "split": split,
    }


def _one_line(text: str) -> str:
    return " ".join(text.replace("|", " ").split())


def _write_tables(out: Path, manifest: list[dict[str, Any]]) -> None:
    write_jsonl(out / "manifest.jsonl", manifest)
    atomic_write_text(
        out / "metadata.csv", "".join(f"{m['id']}|{m['transcript']}|{m['normalized']}\n" for m in manifest)
    )
    for split in ("train", "val"):
        atomic_write_text(
            out / "filelists" / f"{split}.txt",
            "".join(f"{m['path']}|{m['normalized']}\n" for m in manifest if m["split"] == split),
        )


def dataset_report(
    manifest: list[dict[str, Any]],
    rejected: dict[str, int],
    bins: int = 20,
    segments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pure summary of a manifest: hours, length distribution and histogram, speaking rate; with the
    segment records, the seconds of speech each segmenter rejection cost and the SNR distribution
    of every segmented clip, kept or not (where the SNR gate cuts, and what it costs)."""
    durs = np.array([m["duration"] for m in manifest], float)
    words = np.array([len(m["normalized"].split()) for m in manifest], float)
    chars = np.array([len(m["normalized"]) for m in manifest], float)

    def stats(x: np.ndarray) -> dict[str, float]:
        if not len(x):
            return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0}
        return {
            k: round(float(f(x)), 3)
            for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean), ("median", np.median))
        }

    counts, edges = np.histogram(
        durs, bins=bins, range=(0.0, max(10.0, float(durs.max()) if len(durs) else 10.0))
    )
    safe = np.maximum(durs, 1e-6)
    return {
        "clips": len(manifest),
        "total_seconds": round(float(durs.sum()), 2),
        "total_hours": round(float(durs.sum()) / 3600, 4),
        "duration_s": stats(durs),
        "histogram": {"edges_s": [round(float(e), 3) for e in edges], "counts": counts.tolist()},
        "speaking_rate": {
            "words_per_s": stats(words / safe),
            "chars_per_s": stats(chars / safe),
            "overall_words_per_s": round(float(words.sum() / max(durs.sum(), 1e-6)), 3),
        },
        "low_confidence_kept": sum(1 for m in manifest if m.get("low_confidence")),
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": int(sum(rejected.values())),
        "splits": {s: sum(1 for m in manifest if m["split"] == s) for s in ("train", "val")},
        "rejected_speech_s": speech_lost_s(segments or []),
        "snr_db": snr_distribution(segments or []),
    }


def snr_distribution(segments: list[dict[str, Any]], step_db: float = 2.5) -> dict[str, Any]:
    """Estimated SNR of the segmented clips: stats, and counts per ``step_db`` bin, kept and not."""
    snr = np.array([r["snr_db"] for r in segments if "snr_db" in r], float)
    kept = np.array([bool(r.get("kept")) for r in segments if "snr_db" in r])
    if not len(snr):
        return {"clips": 0}
    lo, hi = np.floor(snr.min() / step_db) * step_db, np.ceil(snr.max() / step_db + 1e-9) * step_db
    edges = np.arange(lo, hi + step_db / 2, step_db)
    return {
        "clips": len(snr),
        **{k: round(float(f(snr)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))},
        "edges_db": [round(float(e), 2) for e in edges],
        "kept": np.histogram(snr[kept], edges)[0].tolist(),
        "rejected": np.histogram(snr[~kept], edges)[0].tolist(),
    }


def plot_report(report: dict[str, Any], manifest: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.6))
    edges, counts = report["histogram"]["edges_s"], report["histogram"]["counts"]
    ax1.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
    ax1.set(
        title=f"clip length ({report['clips']} clips, {report['total_hours']:.3f} h)",
        xlabel="seconds",
        ylabel="clips",
    )
    rates = [len(m["normalized"].split()) / max(m["duration"], 1e-6) for m in manifest]
    ax2.hist(rates, bins=20, edgecolor="black")
    ax2.set(title="speaking rate", xlabel="words / second", ylabel="clips")
    snr = report.get("snr_db", {})
    if snr.get("clips"):
        e, width = snr["edges_db"], np.diff(snr["edges_db"])
        ax3.bar(e[:-1], snr["kept"], width=width, align="edge", edgecolor="black", label="kept")
        ax3.bar(e[:-1], snr["rejected"], width=width, align="edge", edgecolor="black", bottom=snr["kept"],
                label="rejected", color="tab:red")  # fmt: skip
        ax3.legend()
    ax3.set(title="estimated SNR of the segmented clips", xlabel="dB", ylabel="clips")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def summary_dict(summary: BuildSummary) -> dict[str, Any]:
    return {**asdict(summary), "out_dir": str(summary.out_dir)}
