"""Reading and writing audio: any format libsndfile decodes, to mono float32 at a chosen rate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ttsops.errors import DataError
from ttsops.infra.atomic import atomic_write_bytes


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Load ``path`` as mono float32 in [-1, 1], resampled to ``sample_rate`` when given.

    Stereo is averaged, integer formats (8/16/24/32-bit) are scaled by libsndfile. Raises
    DataError naming the file when it is missing, empty or not audio.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DataError(f"cannot decode audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise DataError(f"audio file has no samples: {path}")
    wav = data.mean(axis=1)
    if sample_rate is not None and sr != sample_rate:
        wav = soxr.resample(wav, sr, sample_rate).astype(np.float32)
        sr = sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """Encode ``wav`` as 16-bit PCM WAV bytes (for HTTP responses and reports)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def save_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM atomically (temp file + rename): a reader never sees half a file."""
    return atomic_write_bytes(path, wav_bytes(wav, sample_rate))
