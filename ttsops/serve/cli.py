"""``ttsops serve`` (the HTTP service) and ``ttsops synthesize "text" -o out.wav``.

A model is a checkpoint path or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``; with
``--config`` the default is the config's registry model and alias (``registry.model_name``,
``registry.alias``) on the tuner's MLflow store (``monitoring.platforms.mlflow.tracking_uri``, else
the embedded ``sqlite:///<core_engine.work_dir>/mlflow.db``, as ``ttsops tune`` uses it).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError, ServeError

logger = logging.getLogger(__name__)

_NAMED = re.compile(r"(?P<name>[A-Za-z0-9_.-]+)=(?P<source>.+)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "-m",
        action="append",
        metavar="[NAME=]SOURCE",
        help="checkpoint path, directory with best_model.pt, export directory (ttsops export), "
        "models:/NAME@ALIAS or models:/NAME/VERSION",
    )
    p.add_argument("--config", help="TunerConfig YAML: default model = registry.model_name@registry.alias")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: the config's store, else $MLFLOW_TRACKING_URI)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (serve: default 1, as requests already run in parallel)",
    )


def _resolve_models(args: argparse.Namespace) -> tuple[dict[str, str], str | None]:
    """``--model`` values -> {public name: source}, plus the tracking URI to use."""
    from ttsops.serve.loader import ModelSource

    tracking_uri = args.tracking_uri
    raw = list(args.model or [])
    if args.config:
        from ttsops.config import load_config

        cfg = load_config(args.config)
        tracking_uri = tracking_uri or cfg.tracking_uri()
        if not raw:
            raw = [f"models:/{cfg.registry.model_name}@{cfg.registry.alias}"]
    if not raw:
        raise ConfigError(
            "no model: give --model PATH|models:/NAME@ALIAS, or --config with a registry section"
        )
    models: dict[str, str] = {}
    for item in raw:
        m = _NAMED.fullmatch(item)
        name, source = (m["name"], m["source"]) if m and not item.startswith("models:") else (None, item)
        name = name or ModelSource.parse(source).default_name
        if name in models:
            raise ConfigError(f"--model {item}: the name {name!r} is used twice (give NAME=SOURCE)")
        models[name] = source
    return models, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def _set_threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise ConfigError(f"--threads {n}: must be at least 1")
        import torch

        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ttsops serve", description="HTTP text-to-speech service")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=os.environ.get("TTSOPS_API_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /v1/* (default: $TTSOPS_API_TOKEN)",
    )
    p.add_argument("--max-text-chars", type=int, default=500)
    p.add_argument("--max-body-bytes", type=int, default=16_384)
    p.add_argument(
        "--reload-interval", type=float, default=30.0, help="seconds between registry alias checks (0: never)"
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="where registry models are downloaded")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn
    from pydantic import ValidationError

    from ttsops.serve.app import ServeSettings, create_app
    from ttsops.serve.loader import default_synthesizer_loader

    models, tracking_uri = _resolve_models(args)
    # one thread per request: on a busy CPU, OpenMP teams of 2+ threads per request stall each
    # other (benchmarks/README.md: RTF 1.5 with 2 threads vs 0.14 with 1 on the shared 2-core box)
    _set_threads(args.threads or 1)
    try:
        settings = ServeSettings(
            models=models,
            tracking_uri=tracking_uri,
            api_token=args.token or None,
            max_text_chars=args.max_text_chars,
            max_body_bytes=args.max_body_bytes,
            reload_interval_s=args.reload_interval or None,
            cache_dir=args.cache_dir,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    app = create_app(settings, default_synthesizer_loader(args.device))
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))
    try:
        server.run()
    except SystemExit:  # uvicorn exits (code 3) when the lifespan start-up failed
        if server.started:
            raise
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it drained on: a clean stop
        if server.started:
            return 0
        raise
    if not server.started:
        error = getattr(app.state, "startup_error", None)
        raise ServeError(str(error) if error else f"the service did not start on {args.host}:{args.port}")
    return 0


def load_one_model(args: argparse.Namespace, console: Any, cache: Path, command: str) -> tuple[Any, str]:
    """The one ``--model`` of a command as a ``ttsops.model.inference.Synthesizer`` (registry models are
    downloaded into ``cache``), and a label naming it (with its registry version)."""
    from ttsops.serve.loader import ModelResolver, ModelSource, default_synthesizer_loader

    models, tracking_uri = _resolve_models(args)
    if len(models) != 1:
        raise ConfigError(f"{command}: give exactly one --model")
    _set_threads(args.threads)
    ((name, raw),) = models.items()
    src = ModelSource.parse(raw)
    resolver = ModelResolver(tracking_uri, cache)
    with console.status(f"loading {raw}"):
        version = resolver.current_version(src)
        synth = default_synthesizer_loader(args.device)(resolver.fetch(src, version))
    return synth, f"{name}{' version ' + version if version else ''}"


def synthesize_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ttsops synthesize", description="text -> wav with a trained model")
    p.add_argument("text", help='what to say ("-" reads stdin)')
    p.add_argument("-o", "--output", type=Path, required=True, help="the .wav to write")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the prenet's dropout (on at inference): the same audio every time (default: random)")
    add_model_args(p)
    args = p.parse_args(argv)
    from rich.console import Console

    from ttsops.audio.io import save_wav

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise ConfigError("synthesize: the text is empty")
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ttsops-synth-") as cache:
        synth, label = load_one_model(args, console, Path(cache), "synthesize")
        started = time.perf_counter()
        with console.status("synthesising"):
            try:
                wav, sr = synth.synthesize(text.strip(), seed=args.seed)
            except ValueError as e:
                raise ServeError(f"cannot synthesise this text: {e}") from None
        took = time.perf_counter() - started
    save_wav(args.output, wav, sr)
    seconds = len(wav) / sr
    console.print(
        f"wrote {args.output} ({seconds:.2f} s at {sr} Hz) with {label} in {took:.2f} s "
        f"(RTF {took / max(seconds, 1e-9):.2f})",
        soft_wrap=True,
    )
    return 0
