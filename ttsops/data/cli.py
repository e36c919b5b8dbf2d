"""``ttsops data``: raw recordings -> clips -> transcripts -> LJSpeech dataset -> DVC version.

ttsops data synth-corpus OUT_DIR [--n 300]                 a demo corpus (ttsops.data.corpus)
ttsops data segment RAW [RAW ...] SEG_DIR [--workers N]     clips + segments.jsonl
ttsops data transcribe SEG_DIR [--backend pocketsphinx]    transcripts.jsonl
ttsops data build SEG_DIR DATASET_DIR                      wavs/, metadata.csv, manifest.jsonl, report
ttsops data version DATASET_DIR [--remote URL]             prints the version id
ttsops data checkout VERSION DATASET_DIR                   restores that version byte for byte
ttsops data versions DATASET_DIR                           lists the versions
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from rich.console import Console

from ttsops.errors import ConfigError

C = TypeVar("C")

console = Console()


def _workers(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_segment(args: argparse.Namespace) -> int:
    from ttsops.data.smart_segmenter import SegmenterConfig, rejection_line, segment

    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(SegmenterConfig)
        if getattr(args, f.name, None) is not None
    }
    s = segment(
        args.inputs, args.out_dir, _config(SegmenterConfig, overrides), args.workers, not args.no_progress
    )
    console.print(
        f"segmented {s.sources} files ({s.skipped} already done): {s.kept} clips, "
        f"{s.kept_hours:.3f} h kept; rejected {rejection_line(s)} -> {s.out_dir}"
    )
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from ttsops.data.transcribe import TranscribeConfig, transcribe

    cfg = TranscribeConfig(args.backend, args.model_dir, args.min_confidence, args.language)
    try:
        s = transcribe(args.clips_dir, args.out, cfg, args.workers, not args.no_progress)
    except ImportError as e:
        raise ConfigError(str(e)) from e
    console.print(
        f"transcribed {s.clips} clips ({s.new} new), {s.low_confidence} below confidence "
        f"{s.threshold:.2f} -> {s.out}"
    )
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from ttsops.data.build import BuildConfig, build

    cfg = _config(
        BuildConfig,
        {
            "sample_rate": args.sample_rate,
            "val_fraction": args.val_fraction,
            "seed": args.seed,
            "include_low_confidence": args.include_low_confidence,
        },
    )
    s = build(args.segments_dir, args.out_dir, args.transcripts, cfg, args.workers, not args.no_progress)
    console.print(
        f"dataset {s.out_dir}: {s.clips} clips ({s.train} train / {s.val} val), {s.total_hours:.3f} h; "
        f"rejected {s.rejected or 'none'}"
    )
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    from ttsops.data.versioning import version_dataset

    v = version_dataset(args.dataset_dir, args.repo, args.remote, push=not args.no_push)
    print(v.id)
    return 0


def _cmd_checkout(args: argparse.Namespace) -> int:
    from ttsops.data.versioning import checkout_version

    v = checkout_version(args.version, args.dataset_dir, args.repo)
    console.print(f"{v.dataset} is at version {v.id} ({v.files} files)")
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    from ttsops.data.versioning import list_versions

    for v in list_versions(args.dataset_dir, args.repo):
        print(f"{v['id']}  {v['created']}  {v['files']} files  {v['size']} bytes")
    return 0


def _config(cls: type[C], values: dict[str, object]) -> C:
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
    except ValueError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ttsops data", description="dataset tools")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("synth-corpus", help="synthesise the demo corpus (see `ttsops data synth-corpus -h`)")
    _segment_parser(sub)
    _transcribe_parser(sub)
    _build_parser(sub)
    _version_parsers(sub)
    return ap


def _segment_parser(sub: Any) -> None:
    seg = sub.add_parser("segment", help="cut long recordings into clips (silero-vad)")
    seg.add_argument("inputs", nargs="+", help="audio files or directories")
    seg.add_argument("out_dir")
    for name, typ, help_ in [
        ("sample_rate", int, "clip rate (22050)"),
        ("min_clip_s", float, "shortest clip (1.0)"),
        ("max_clip_s", float, "longest clip (10.0)"),
        ("lead_margin_s", float, "context before speech (0.25)"),
        ("tail_margin_s", float, "context after speech (0.15)"),
        ("split_pause_s", float, "pauses at least this long are cuts (0.28)"),
        ("min_piece_s", float, "a long run is cut where both sides keep this much speech, if any pause allows (2.0)"),
        ("min_snr_db", float, "reject below this estimated SNR (25)"),
        ("min_level_dbfs", float, "reject quieter speech (-45)"),
        ("target_level_dbfs", float, "loudness target (-20)"),
    ]:
        seg.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None, help=help_)
    seg.add_argument(
        "--no-word-check", dest="word_check", action="store_false", default=None,
        help="do not check cuts inside long runs against pocketsphinx word timings (faster, may cut words)",
    )  # fmt: skip
    _workers(seg)


def _transcribe_parser(sub: Any) -> None:
    tr = sub.add_parser("transcribe", help="ASR for each clip")
    tr.add_argument("clips_dir", help="a segment output dir (segments.jsonl) or any dir of wavs")
    tr.add_argument(
        "--out", default=None, help="transcripts.jsonl path (default: CLIPS_DIR/transcripts.jsonl)"
    )
    tr.add_argument("--backend", default="pocketsphinx", choices=["pocketsphinx", "faster-whisper"])
    tr.add_argument("--model-dir", default=None, help="faster-whisper: local CTranslate2 model directory")
    tr.add_argument("--min-confidence", type=float, default=None, help="flag clips below (backend default)")
    tr.add_argument("--language", default="en")
    _workers(tr)


def _build_parser(sub: Any) -> None:
    bd = sub.add_parser("build", help="LJSpeech-layout dataset + manifest + report")
    bd.add_argument("segments_dir")
    bd.add_argument("out_dir")
    bd.add_argument("--transcripts", default=None, help="default: SEGMENTS_DIR/transcripts.jsonl")
    bd.add_argument("--sample-rate", type=int, default=None)
    bd.add_argument("--val-fraction", type=float, default=None, help="validation share (0.05)")
    bd.add_argument("--seed", default=None, help="split salt")
    bd.add_argument("--include-low-confidence", action="store_true")
    _workers(bd)


def _version_parsers(sub: Any) -> None:
    ver = sub.add_parser("version", help="snapshot a dataset with DVC and push it")
    ver.add_argument("dataset_dir")
    ver.add_argument(
        "--repo", default=None, help="DVC project dir (default: nearest .dvc above, else the parent)"
    )
    ver.add_argument("--remote", default=None, help="DVC remote URL (default: configured, else a local dir)")
    ver.add_argument("--no-push", action="store_true")

    co = sub.add_parser("checkout", help="restore a dataset version")
    co.add_argument("version")
    co.add_argument("dataset_dir")
    co.add_argument("--repo", default=None)

    ls = sub.add_parser("versions", help="list the versions of a dataset")
    ls.add_argument("dataset_dir")
    ls.add_argument("--repo", default=None)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": _cmd_segment,
    "transcribe": _cmd_transcribe,
    "build": _cmd_build,
    "version": _cmd_version,
    "checkout": _cmd_checkout,
    "versions": _cmd_versions,
}


def main(argv: list[str] | None = None) -> int:
    import sys

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "synth-corpus":
        from ttsops.data import corpus

        return corpus.main(args_list[1:])
    args = build_parser().parse_args(args_list)
    return COMMANDS[args.command](args)
