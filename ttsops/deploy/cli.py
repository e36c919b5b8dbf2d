"""``ttsops export MODEL -o OUT``: the inference path as TorchScript and ONNX graphs
(``ttsops.model.export``), each checked against the PyTorch model it came from.

The check synthesises a few texts with both, with the same seed for the prenet's dropout, and
compares the log-mel spectrograms (before the vocoder): the same number of frames, and the largest
absolute difference within ``--tolerance`` (default 1e-4; measured on the tiny and demo models:
0 for TorchScript, below 1e-6 for ONNX Runtime). The result is printed and recorded in the export's
``ttsops_export.json``; a failed check exits 1 (the files stay, for inspection).

    ttsops export best_model.pt -o exported/
    ttsops export models:/ttsops-tacotron2@champion -o exported/ --format onnx
    ttsops serve --model exported/onnx
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from ttsops.errors import ConfigError, ServeError

DEFAULT_TOLERANCE = 1e-4
CHECK_TEXTS = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
)


@dataclass(frozen=True)
class Check:
    """How an export's mels compare with the PyTorch model's for the same texts and seed."""

    max_abs_diff: float  # inf when the frame counts differ
    frames: list[tuple[int, int]]  # (PyTorch, exported) per text
    tolerance: float
    seed: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def line(self, fmt: str, where: Path) -> str:
        frames = ", ".join(str(a) if a == b else f"{a} vs {b}" for a, b in self.frames)
        verdict = "ok" if self.ok else "FAILED"
        return (f"{fmt}: max |log-mel difference| {self.max_abs_diff:.2e} against PyTorch over {len(self.frames)} "
                f"texts ({frames} frames; tolerance {self.tolerance:.0e}): {verdict} -> {where}")


def check_export(reference: Any, exported: Any, texts: list[str], seed: int, tolerance: float) -> Check:
    """Synthesise ``texts`` with both Synthesizers (same seed) and compare the mels."""
    worst, frames = 0.0, []
    for text in texts:
        a, _ = reference.mel(text, seed)
        b, _ = exported.mel(text, seed)
        frames.append((a.shape[1], b.shape[1]))
        worst = max(worst, float(abs(a - b).max()) if a.shape == b.shape else float("inf"))
    return Check(worst, frames, tolerance, seed)


def _checkpoint(args: argparse.Namespace, cache: Path) -> Path:
    """MODEL -> a local checkpoint file (a registry model is downloaded into ``cache``)."""
    from ttsops.model.exported import is_export_dir
    from ttsops.serve.loader import ModelResolver, ModelSource

    src = ModelSource.parse(args.model)
    if src.path is not None and is_export_dir(src.path):
        raise ConfigError(f"{args.model} is an export already: give the checkpoint it came from")
    resolver = ModelResolver(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), cache)
    return resolver.fetch(src, resolver.current_version(src))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ttsops export", description="export a model as TorchScript / ONNX graphs")
    p.add_argument("model", help="checkpoint, directory with best_model.pt, models:/NAME@ALIAS or models:/NAME/VERSION")
    p.add_argument("-o", "--output", type=Path, required=True, help="writes OUTPUT/<format>/ per format")
    p.add_argument("--format", default="torchscript,onnx", help="comma-separated: torchscript, onnx (default: both)")
    p.add_argument("--text", action="append", help="a text for the numerical check (repeatable; default: three)")
    p.add_argument("--seed", type=int, default=0, help="prenet dropout seed of the check (default 0)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest log-mel difference accepted (default {DEFAULT_TOLERANCE:.0e})")
    p.add_argument("--tracking-uri", help="MLflow registry for models:/ (default: $MLFLOW_TRACKING_URI)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from ttsops.model.export import FORMATS, export_model, record_check
    from ttsops.model.inference import Synthesizer
    from ttsops.model.tacotron2 import Tacotron2

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format {args.format!r}: unknown {', '.join(unknown) or 'empty'} (valid: {', '.join(FORMATS)})")
    if not args.tolerance >= 0:
        raise ConfigError(f"--tolerance {args.tolerance}: must be >= 0")
    console, out_console = Console(stderr=True), Console()
    texts = args.text or list(CHECK_TEXTS)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ttsops-export-") as cache:
        ckpt = _checkpoint(args, Path(cache))
        reference = Synthesizer.from_checkpoint(ckpt)
        for fmt in formats:
            with console.status(f"exporting {fmt}"):
                out = export_model(cast(Tacotron2, reference.model), reference.mel_config, args.output / fmt, fmt,
                                   args.model)
            with console.status(f"checking {fmt} against PyTorch"):
                try:
                    check = check_export(reference, Synthesizer.from_export(out), texts, args.seed, args.tolerance)
                except ValueError as e:
                    raise ServeError(f"cannot synthesise the check's texts: {e}") from None
            record_check(out, {**asdict(check), "ok": check.ok, "texts": texts})
            out_console.print(check.line(fmt, out), soft_wrap=True, highlight=False)
            failed += not check.ok
    return 1 if failed else 0
