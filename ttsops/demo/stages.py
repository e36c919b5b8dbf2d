"""The demo's stages, one function each: ``Demo`` in, the stage's marker info out."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ttsops.demo.plan import MARKERS, MIN_TUNE_MIN, RESERVE_MIN, Demo, write_marker
from ttsops.errors import DataError, RegistryError, TtsopsError, TunerError
from ttsops.infra.tracking import Tag

logger = logging.getLogger(__name__)


# --- stages ----------------------------------------------------------------------------------------
def _cli(fn: Callable[[list[str]], int], argv: list[str], what: str, error: type[TtsopsError]) -> None:
    code = fn(argv)
    if code != 0:
        raise error(f"{what} exited with code {code}")


def stage_synth(d: Demo) -> dict[str, Any]:
    from ttsops.data.recordings import synth_raw_recordings  # audio stack: loaded when a stage needs it

    p = d.plan
    files = synth_raw_recordings(d.raw_dir, n_files=p.n_files, utterances_per_file=p.utterances_per_file, seed=p.seed,
                                 voice=p.voice, pause_s=p.pause_s, snr_db=p.snr_db, workers=d.workers)
    (d.out / "raw_truth.json").write_text(json.dumps(files, indent=1))
    secs = sum(f["seconds"] for f in files)
    d.console.print(f"{len(files)} recordings, {secs / 60:.1f} min, "
                    f"{sum(len(f['utterances']) for f in files)} utterances -> {d.raw_dir}")
    return {"files": len(files), "minutes": round(secs / 60, 2)}


def stage_segment(d: Demo) -> dict[str, Any]:
    from ttsops.data import cli

    _cli(cli.main, ["segment", str(d.raw_dir), str(d.seg_dir), "--workers", str(d.workers)],
         "ttsops data segment", DataError)
    return {}


def stage_transcribe(d: Demo) -> dict[str, Any]:
    from ttsops.data import cli

    _cli(cli.main, ["transcribe", str(d.seg_dir), "--workers", str(d.workers)], "ttsops data transcribe",
         DataError)
    return {}


def stage_build(d: Demo) -> dict[str, Any]:
    from ttsops.data import cli
    from ttsops.data.recordings import asr_quality

    _cli(cli.main, ["build", str(d.seg_dir), str(d.dataset_dir), "--workers", str(d.workers)],
         "ttsops data build", DataError)
    rows = [json.loads(line) for line in (d.dataset_dir / "manifest.jsonl").read_text().splitlines() if line]
    if len(rows) < 2:
        raise DataError(f"{d.dataset_dir}: only {len(rows)} clips survived segmentation and transcription")
    quality = asr_quality(rows, json.loads((d.out / "raw_truth.json").read_text()))
    (d.dataset_dir / "asr_quality.json").write_text(json.dumps(quality, indent=1))
    d.console.print(f"ASR word error rate against the spoken text: {quality['asr_wer']:.3f} "
                    f"({quality['clips_matched']} clips)")
    return {"clips": len(rows), **quality}


def stage_version(d: Demo) -> dict[str, Any]:
    from ttsops.data import cli
    from ttsops.data.versioning import list_versions

    _cli(cli.main, ["version", str(d.dataset_dir), "--repo", str(d.out)], "ttsops data version", DataError)
    versions = list_versions(d.dataset_dir, d.out)
    return {"version": str(versions[-1]["id"]) if versions else None}


def tune_budget(d: Demo) -> float:
    """Minutes for the tuner: fixed the first time the stage starts, so a resumed study keeps it."""
    saved = d.out / MARKERS / "tune_budget.json"
    try:
        return float(json.loads(saved.read_text())["minutes"])
    except (OSError, ValueError, KeyError):
        pass
    spent = sum(float(i.get("seconds", 0)) for i in d.info.values()) / 60
    minutes = max(MIN_TUNE_MIN, d.minutes_budget - spent - RESERVE_MIN)
    write_marker(d.out, "tune_budget", {"minutes": minutes, "data_plane_minutes": round(spent, 2)})
    return minutes


def stage_tune(d: Demo) -> dict[str, Any]:
    from ttsops import tune

    minutes = tune_budget(d)
    overrides = d.tune_overrides(minutes)
    d.console.print(f"tuning budget {minutes:.1f} min; [dim]ttsops tune --config {d.config} "
                    + " ".join(overrides) + "[/dim]")
    with _budget_bar(d, minutes):
        code = tune.main(["--config", str(d.config), *overrides])
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise TunerError(f"ttsops tune exited with code {code}")
    summary = json.loads((d.study_dir / "summary.json").read_text())
    return {"best_trial": summary.get("best_trial"), "best_value": summary.get("best_value"),
            "stop_reason": summary.get("stop_reason"), "generations": len(summary.get("rows", []))}


@contextmanager
def _budget_bar(d: Demo, minutes: float) -> Iterator[None]:
    """A progress bar over the tuning budget, refreshed from a thread while the tuner runs."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total, t0, stop = minutes * 60, time.monotonic(), threading.Event()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=d.console, transient=True) as bar:
        task = bar.add_task("tuning", total=total)

        def refresh() -> None:
            while not stop.wait(2.0):
                n = len(list(d.tune_dir.glob("*/generations/gen_*")))
                bar.update(task, completed=min(total, time.monotonic() - t0),
                           description=f"tuning: {n} generation{'s' if n != 1 else ''} started")

        thread = threading.Thread(target=refresh, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)


def stage_registry(d: Demo) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ttsops import registry
    from ttsops.registry import cli as registry_cli

    reg = d.tuner_config().registry
    best = json.loads((d.study_dir / registry.BEST_META).read_text()) if (
        d.study_dir / registry.BEST_META).is_file() else None
    if best is None or not (d.study_dir / registry.BEST_FILE).is_file():
        raise RegistryError(f"{d.study_dir}: no best_model.pt: no generation completed")
    _cli(registry_cli.main, ["--tracking_uri", d.tracking_uri, "--name", reg.model_name, "list"],
         "ttsops registry list", RegistryError)
    client = MlflowClient(tracking_uri=d.tracking_uri, registry_uri=d.tracking_uri)
    try:
        mv = client.get_model_version_by_alias(reg.model_name, reg.alias)
        champion = {"model": reg.model_name, "alias": reg.alias, "version": str(mv.version),
                    "generation": mv.tags.get(Tag.GENERATION), "objective": mv.tags.get(Tag.OBJECTIVE)}
        d.console.print(f"[bold green]champion[/]: models:/{reg.model_name}@{reg.alias} = version "
                        f"{mv.version} (generation {champion['generation']}, objective {champion['objective']})")
    except MlflowException:
        champion = {"model": reg.model_name, "alias": reg.alias, "version": None}
        d.console.print(f"[yellow]no version has the alias {reg.alias!r}: the best generation "
                        f"({best['generation']}) did not pass the promotion gate; the samples come from "
                        f"best_model.pt anyway[/]")
    return {**champion, "best_generation": best["generation"], "best_objective": best["objective"],
            "best_model": str(d.study_dir / registry.BEST_FILE)}


def stage_samples(d: Demo) -> dict[str, Any]:
    import torch

    from ttsops.audio.io import save_wav
    from ttsops.data.transcribe import TranscribeConfig, get_backend, transcribe_clip
    from ttsops.infra.plotting import plot_alignment
    from ttsops.model.inference import Synthesizer

    torch.set_num_threads(1)  # on a busy 2-core box one thread beats two spinning ones
    synth = Synthesizer.from_checkpoint(d.study_dir / "best_model.pt", device="cpu")
    asr = get_backend(TranscribeConfig())  # what the ASR hears is a rough intelligibility check
    d.samples_dir.mkdir(parents=True, exist_ok=True)
    items: list[dict[str, Any]] = []
    for i, text in enumerate(d.plan.samples, 1):
        mel, align = synth.mel(text)
        wav = synth.vocoder(mel)
        path = save_wav(d.samples_dir / f"sample_{i:02d}.wav", wav, synth.sample_rate)
        png = d.samples_dir / f"sample_{i:02d}_alignment.png"
        png.write_bytes(plot_alignment(align, f"sample {i}"))
        heard = transcribe_clip(path, asr).text
        items.append({"text": text, "wav": str(path), "alignment": str(png), "asr": heard,
                      "seconds": round(len(wav) / synth.sample_rate, 2)})
        d.console.print(f"  {path.name}: {items[-1]['seconds']:.2f} s  {text!r}  (the ASR heard {heard!r})")
    from ttsops.metrics.intelligibility import word_error_rate

    wer = word_error_rate([i["text"] for i in items], [i["asr"] for i in items])
    (d.samples_dir / "samples.json").write_text(json.dumps(items, indent=1))
    d.console.print(f"ASR word error rate on the samples: {wer:.2f} (1.0: nothing recognisable yet)")
    return {"samples": len(items), "asr_wer": round(wer, 3)}


def stage_evaluate(d: Demo) -> dict[str, Any]:
    """``ttsops evaluate`` on the champion: the held-out lists, their copy-synthesis ceiling."""
    from ttsops import evaluate

    out = d.samples_dir / "intelligibility.json"
    _cli(evaluate.main, ["--model", str(d.study_dir / "best_model.pt"), "--dataset", str(d.dataset_dir),
                         "--sentences", str(d.plan.heldout_sentences), "--threads", "1", "--json", str(out)],
         "ttsops evaluate", DataError)
    scores = json.loads(out.read_text())
    return {name: {k: scores[name][k] for k in ("wer", "cer", "ceiling_wer", "speaking_rate_ratio", "stop_rate")}
            for name in ("in_domain", "out_of_domain") if name in scores}


# --- what the demo left, for the report and the closing lines ---------------------------------------
def _bin(name: str) -> str:
    """``.venv/bin/NAME`` relative to the working directory when it is there, else absolute."""
    path = Path(sys.executable).parent / name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def commands(d: Demo) -> dict[str, str]:
    return {
        "MLflow UI": f"{_bin('mlflow')} ui --backend-store-uri {d.tracking_uri} --port 5000",
        "TensorBoard": f"{_bin('tensorboard')} --logdir {d.study_dir / 'generations'} --port 6006",
        "optuna-dashboard": f"{_bin('optuna-dashboard')} {d.storage} --port 8080",
        "serve the champion": serve_command(d),
    }


def serve_command(d: Demo) -> str:
    reg = d.info.get("registry", {})
    if reg.get("version"):
        return (f"{_bin('ttsops')} serve --model models:/{reg['model']}@{reg['alias']} "
                f"--tracking-uri {d.tracking_uri}")
    return f"{_bin('ttsops')} serve --model {d.study_dir / 'best_model.pt'}"


def facts(d: Demo) -> dict[str, str]:
    facts = {"demo": f"{d.plan.name}, output {d.out}"}
    for stage, _, _ in STAGES:
        info = d.info.get(stage)
        if info and "seconds" in info:
            facts[f"stage {stage}"] = f"{info['seconds']:.0f} s"
    build, version = d.info.get("build", {}), d.info.get("version", {})
    if "asr_wer" in build:
        facts["ASR WER vs spoken text"] = f"{build['asr_wer']:.3f} over {build.get('clips_matched')} clips"
    if "asr_wer" in d.info.get("samples", {}):
        facts["ASR WER on the samples"] = f"{d.info['samples']['asr_wer']:.2f}"
    for name, s in d.info.get("evaluate", {}).items():
        if isinstance(s, dict) and "wer" in s:
            facts[f"held-out ASR WER, {name.replace('_', '-')}"] = (
                f"{s['wer']:.2f} (copy-synthesis ceiling {s['ceiling_wer']}, speaking rate "
                f"{s['speaking_rate_ratio']:.2f}x, stopped on its own {s['stop_rate']:.0%})")
    if version.get("version"):
        facts["dataset version (DVC)"] = str(version["version"])
    reg = d.info.get("registry", {})
    if reg:
        facts["champion"] = (f"models:/{reg['model']}@{reg['alias']} = v{reg['version']}" if reg.get("version")
                             else f"none passed the promotion gate (best: generation {reg.get('best_generation')})")
    return facts


def stage_report(d: Demo) -> dict[str, Any]:
    from ttsops.report import Sample, build_report

    samples = [Sample(s["text"], Path(s["wav"]), Path(s["alignment"]), s.get("asr"))
               for s in json.loads((d.samples_dir / "samples.json").read_text())]
    path = build_report(d.study_dir, d.report_dir, tracking_uri=d.tracking_uri, storage=d.storage,
                        dataset_dir=d.dataset_dir, samples=samples, facts=facts(d),
                        commands=commands(d))
    d.console.print(f"report: {path}")
    return {"report": str(path)}


STAGES: list[tuple[str, str, Callable[[Demo], dict[str, Any]]]] = [
    ("synth", "synthesise long raw recordings (flite rms, pauses, noise)", stage_synth),
    ("segment", "ttsops data segment: cut the recordings into clips", stage_segment),
    ("transcribe", "ttsops data transcribe: ASR for every clip", stage_transcribe),
    ("build", "ttsops data build: LJSpeech dataset + report", stage_build),
    ("version", "ttsops data version: DVC snapshot", stage_version),
    ("tune", "ttsops tune: Smart Tuner over train.py", stage_tune),
    ("registry", "model registry: the champion", stage_registry),
    ("samples", "synthesise sample sentences with the champion", stage_samples),
    ("evaluate", "ttsops evaluate: what the ASR understands of the held-out sentences", stage_evaluate),
    ("report", "HTML report", stage_report),
]
