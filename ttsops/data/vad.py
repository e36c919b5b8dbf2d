"""Voice activity on 16 kHz audio: silero-vad's per-frame speech probabilities and 10 ms energy.

The probabilities come from silero-vad's ONNX "sequence" model, loaded from the file inside the
installed ``silero_vad`` wheel (offline). The package itself is never imported: ``import
silero_vad`` sets ``torch.set_num_threads(1)`` for the whole process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

VAD_SR = 16000
VAD_FRAME = 512  # samples at 16 kHz = 32 ms; the model's fixed frame
VAD_CONTEXT = 64
HOP = 160  # 10 ms energy frames at 16 kHz


def silero_model_path(name: str = "silero_vad_16k_sequence.onnx") -> Path:
    """The ONNX file shipped in the silero-vad wheel, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed: pip install silero-vad==6.2.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise ImportError(f"silero-vad has no {name} at {path}: reinstall silero-vad==6.2.3")
    return path


class SileroVad:
    """Per-frame speech probabilities, one ONNX call per ~16 s block, single-threaded."""

    def __init__(self, model_path: str | Path | None = None, block_frames: int = 512):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(model_path or silero_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.block_frames = block_frames

    def probs(self, wav16: np.ndarray) -> np.ndarray:
        n = (len(wav16) + VAD_FRAME - 1) // VAD_FRAME
        if n == 0:
            return np.zeros(0, np.float32)
        frames = np.zeros((n, VAD_FRAME), np.float32)
        frames.reshape(-1)[: len(wav16)] = wav16
        context = np.zeros((n, VAD_CONTEXT), np.float32)
        context[1:] = frames[:-1, -VAD_CONTEXT:]
        blocks = np.concatenate([context, frames], axis=1)
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        out = []
        for i in range(0, n, self.block_frames):
            p, h, c = self.session.run(
                ["speech_probs", "hn", "cn"], {"input": blocks[i : i + self.block_frames], "h": h, "c": c}
            )
            out.append(p)
        return np.concatenate(out).reshape(-1).astype(np.float32)


def frame_energy_db(wav16: np.ndarray) -> np.ndarray:
    """Energy in dBFS of 20 ms windows every 10 ms (frame i centred at i * 10 ms)."""
    n = len(wav16) // HOP
    if n == 0:
        return np.zeros(0, np.float32)
    padded = np.pad(wav16, (HOP, HOP))
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * HOP)[::HOP][:n]
    return (10 * np.log10(np.mean(win.astype(np.float64) ** 2, axis=1) + 1e-12)).astype(np.float32)


def noise_floor_db(energy_db: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(median, threshold) of the non-speech 10 ms frames; threshold = their 95th pct + 3 dB.

    Non-speech = VAD probability < 0.15 in this and the two neighbouring VAD frames each side, so
    speech edges do not leak in. Without 20 such frames (continuous speech) the quietest 5% of all
    frames stand in."""
    if len(probs):
        quiet_vad = np.convolve((probs >= 0.15).astype(float), np.ones(5), mode="same") == 0
        idx = np.minimum((np.arange(len(energy_db)) * HOP) // VAD_FRAME, len(probs) - 1)
        quiet = energy_db[quiet_vad[idx]]
    else:
        quiet = energy_db
    if len(quiet) < 20:
        quiet = np.sort(energy_db)[: max(1, len(energy_db) // 20)]
    return float(np.median(quiet)), max(float(np.percentile(quiet, 95)) + 3.0, -70.0)
