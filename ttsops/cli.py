"""The one ``ttsops`` command. Each stage owns a ``main(argv) -> int`` (callable in-process by
tests); this module only dispatches and turns TtsopsError into one clear line.

    ttsops data synth-corpus|segment|transcribe|build|version|checkout ...
    ttsops train -o OUT -l LOGS --dataset DIR [--config YAML] [--hparams k=v,...]
    ttsops tune --config YAML
    ttsops registry ...       ttsops serve ...       ttsops synthesize "text" -o out.wav
    ttsops export MODEL -o OUT
    ttsops evaluate MODEL     ttsops reproduce RUN_ID|models:/NAME@ALIAS
    ttsops demo               ttsops report ...      ttsops bench early-stop CURVES_DIR
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ttsops.errors import TtsopsError

# stage name -> "module:function"; imported lazily so `ttsops --help` stays fast
STAGES: dict[str, tuple[str, str]] = {
    "data": ("ttsops.data.cli:main", "dataset tools: synth-corpus, segment, transcribe, build, version, checkout"),
    "train": ("ttsops.train.train:main", "train Tacotron2 (NVIDIA-compatible flags)"),
    "tune": ("ttsops.tune:main", "run the Smart Tuner over train.py"),
    "registry": ("ttsops.registry.cli:main", "inspect and promote registered models"),
    "serve": ("ttsops.serve.cli:main", "HTTP inference service"),
    "synthesize": ("ttsops.serve.cli:synthesize_main", "text -> wav from a checkpoint or registry model"),
    "export": ("ttsops.deploy.cli:main", "TorchScript / ONNX graphs of a model, checked against PyTorch"),
    "evaluate": ("ttsops.evaluate:main", "intelligibility (ASR WER) of a model on the held-out sentences"),
    "reproduce": ("ttsops.reproduce.cli:main", "rerun a recorded run (or models:/NAME@ALIAS) and compare its curves"),
    "demo": ("ttsops.demo:main", "the end-to-end demo on a synthesised corpus"),
    "report": ("ttsops.report:main", "HTML report of a study"),
    "bench": ("ttsops.bench.cli:main", "replay benchmarks (early-stop)"),
}


def _usage() -> str:
    width = max(map(len, STAGES))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in STAGES.items())
    return f"usage: ttsops [--debug] STAGE [ARGS...]\n\nstages:\n{rows}\n"


def run_main(fn: Callable[[list[str]], int], argv: Sequence[str], debug: bool = False) -> int:
    """Run a stage's main; a TtsopsError becomes one line on stderr and exit code 2."""
    try:
        return fn(list(argv))
    except TtsopsError as e:
        if debug:
            raise
        print(f"ttsops: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def configure_logging(debug: bool = False) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # MLflow draws a progress bar per artifact download (the registry reads a few small files per
    # champion): noise between our own lines and bars, unless the user asked for it
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # logs written to a file (the tuner's per-generation logs, CI) get long lines, not 80-column wraps
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 240)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=debug)],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        print(f"ttsops: error: unknown stage {stage!r} (valid: {', '.join(STAGES)})", file=sys.stderr)
        return 2
    module, func = STAGES[stage][0].split(":")
    configure_logging(debug)
    fn = getattr(importlib.import_module(module), func)
    return run_main(fn, rest, debug)


if __name__ == "__main__":
    sys.exit(main())
