"""``ttsops evaluate MODEL``: how intelligible a model is, on the shipped held-out sentences.

    ttsops evaluate runs/demo/tune/demo/best_model.pt
    ttsops evaluate models:/ttsops-tacotron2@champion --tracking-uri sqlite:///demo_out/tune/mlflow.db
    ttsops evaluate best_model.pt --dataset data/demo --json eval.json

The model speaks each list of ``ttsops/metrics/heldout/`` free-running, Griffin-Lim vocodes it and
the bundled ASR transcribes it (``ttsops.metrics.intelligibility``). Reference recordings by flite
(``--reference-voice``, the demo corpus's voice by default) give the copy-synthesis ceiling and the
speaking-rate ratio; with ``--reference-voice none`` the rate is measured against ``--dataset``'s
seconds per character instead. With ``--dataset``, held-out sentences found in its transcripts are
refused (a model cannot be measured on what it was trained on).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    from ttsops.serve.cli import add_model_args

    p = argparse.ArgumentParser(prog="ttsops evaluate", description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--lists", default="in_domain,out_of_domain", help="held-out lists to speak (comma-separated)")
    p.add_argument("--sentences", type=int, default=20, help="sentences per list (default: all 20)")
    p.add_argument("--reference-voice", default="rms",
                   help="flite voice of the reference recordings, or 'none' (default: rms, the demo's voice)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="the training dataset: refuses held-out sentences it contains; rate reference without flite")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ttsops-eval-references",
                   help="where reference recordings are kept between runs")
    p.add_argument("--json", type=Path, default=None, help="also write the scores (per sentence) as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print what the ASR heard for each sentence")
    return p


def _rate_reference(args: argparse.Namespace):
    """-> (training texts or [], seconds per character or None)."""
    if args.dataset is None:
        return [], None
    from ttsops.data.dataset import read_metadata

    rows = read_metadata(args.dataset)
    texts = [t for _, t in rows]
    import soundfile as sf

    seconds = sum(sf.info(str(args.dataset / "wavs" / f"{uid}.wav")).duration for uid, _ in rows)
    return texts, seconds / max(1, sum(len(t) for t in texts))


def _lists(args: argparse.Namespace) -> list[str]:
    from ttsops.metrics.intelligibility import load_heldout

    lists = [x.strip() for x in args.lists.split(",") if x.strip()]
    for name in lists:
        load_heldout(name)  # one clear line for an unknown list
    if args.sentences < 1:
        raise ConfigError(f"--sentences {args.sentences}: must be at least 1")
    if args.reference_voice.lower() != "none" and shutil.which("flite") is None:
        raise ConfigError("--reference-voice needs flite (apt-get install flite), or pass --reference-voice none")
    if args.reference_voice.lower() == "none" and args.dataset is None:
        raise ConfigError("--reference-voice none needs --dataset DIR (the speaking rate is measured against it)")
    return lists


def score(args: argparse.Namespace, synth: Any, lists: list[str], console: Any) -> dict[str, Any]:
    """Every list spoken by ``synth`` (a ``ttsops.model.inference.Synthesizer``) and scored."""
    from ttsops.audio.mel import MelExtractor
    from ttsops.metrics import intelligibility as intel

    training, per_char = _rate_reference(args)
    asr = intel.pocketsphinx_asr()
    mel = MelExtractor(synth.vocoder.mel.cfg)
    scores = {}
    for name in lists:
        sentences = intel.load_heldout(name)[: args.sentences]
        intel.check_heldout(sentences, training)
        refs = None
        if args.reference_voice.lower() != "none":
            refs = intel.flite_references(sentences, args.cache_dir, args.reference_voice, synth.sample_rate)

        def expected(text: str, refs: Any = refs) -> float:
            if refs is not None:
                return len(refs[text][0]) / refs[text][1]
            return len(intel.normalise(text)) * float(per_char or 0.0)

        with console.status(f"{name}: speaking and transcribing {len(sentences)} sentences"):
            scores[name] = intel.score_set(name, sentences, synth.speak, asr, expected, refs,
                                           (lambda wav, sr: synth.vocoder(mel(wav).numpy())) if refs else None)
    return scores


def _print(scores: dict[str, Any], label: str, verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"intelligibility of {label}")
    for col in ("list", "WER", "CER", "ceiling WER", "speaking rate", "stopped"):
        table.add_column(col)
    for s in scores.values():
        table.add_row(s.name, f"{s.wer:.3f}", f"{s.cer:.3f}", "-" if s.ceiling_wer is None else f"{s.ceiling_wer:.3f}",
                      f"{s.speaking_rate_ratio:.2f}x", f"{s.stop_rate:.0%}")
    out = Console()
    out.print(table)
    for s in scores.values() if verbose else ():
        for u in s.utterances:
            out.print(f"[dim]{s.name}[/] {u.text!r} -> {u.heard!r} ({u.seconds:.1f} s / {u.expected_seconds:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from ttsops.serve.cli import load_one_model

    lists = _lists(args)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ttsops-evaluate-") as cache:
        synth, label = load_one_model(args, console, Path(cache), "evaluate")
    scores = score(args, synth, lists, console)
    _print(scores, label, args.verbose)
    if args.json:
        from ttsops.infra.atomic import atomic_write_json

        atomic_write_json(args.json, {"model": label, **{n: s.to_dict() for n, s in scores.items()}}, indent=1)
    return 0
