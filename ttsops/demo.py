"""``ttsops demo``: the whole pipeline on a corpus it synthesises itself, in one command.

    ttsops demo [--out demo_out] [--minutes-budget 20] [--quick]

Stages (each ends by writing ``<out>/.stages/<name>.json`` atomically; a re-run skips every stage
that has its marker, and re-runs everything after the first stage it has to run again):

1. ``synth``      long "raw recordings": flite ``rms`` utterances joined by 0.3-2 s pauses, with
                  white noise 35 dB below the speech (one voice: the model is single-speaker)
2. ``segment``    ``ttsops data segment``     (silero-vad clips)
3. ``transcribe`` ``ttsops data transcribe``  (pocketsphinx; WER against the known text is measured)
4. ``build``      ``ttsops data build``       (LJSpeech layout, report.json/png)
5. ``version``    ``ttsops data version``     (DVC, local remote)
6. ``tune``       ``ttsops tune --config configs/demo.yaml`` + overrides; an interrupted study
                  resumes (Optuna storage) when the demo is run again
7. ``registry``   the champion: the version the tuner registered and aliased
8. ``samples``    sample sentences from ``best_model.pt`` (wav + alignment image)
9. ``report``     ``<out>/report/index.html`` (ttsops.report)

``--minutes-budget`` is the wall-clock budget of the whole demo: the tuner gets what the data
plane left, minus a reserve for stages 7-9. ``--quick`` is a tiny variant (a few clips, two
one-epoch generations of a tiny model, promotion gate off) for the end-to-end test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError, DataError, RegistryError, TtsopsError, TunerError
from ttsops.infra.atomic import atomic_write_json
from ttsops.infra.tracking import embedded_tracking_uri

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
MARKERS = ".stages"
RESERVE_MIN = 2.0  # registry + samples + report + the tuner's own set-up and stop overshoot
MIN_TUNE_MIN = 3.0

SAMPLE_SENTENCES = (
    "The teacher found a green bottle near the river.",
    "My sister opened the wooden door before breakfast.",
    "Where did she put the blue notebook?",
    "A tired farmer carried a basket of apples at the station.",
)
TINY_HPARAMS = {  # a model that trains a step in well under a second: exercises the plumbing only
    "encoder_embedding_dim": 32, "attention_rnn_dim": 64, "decoder_rnn_dim": 64, "prenet_dim": 32,
    "attention_dim": 16, "postnet_embedding_dim": 32, "postnet_n_convolutions": 2,
    "n_frames_per_step": 3, "max_decoder_steps": 60, "val_fraction": 0.2, "n_audio_metric_clips": 1,
    "log_every_steps": 1,
}


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is; ``FULL`` is the README's demo, ``QUICK`` the e2e test's."""

    name: str
    n_files: int
    utterances_per_file: int
    samples: tuple[str, ...]
    overrides: tuple[str, ...] = ()  # extra ``ttsops tune`` overrides
    # white noise this far below the speech: "light". Measured with pocketsphinx on 48 clips (kept
    # as confident / WER of those): 30 dB 67% / 0.18, 35 dB 90% / 0.19, 45 dB 94% / 0.11
    snr_db: float = 35.0
    pause_s: tuple[float, float] = (0.3, 2.0)
    voice: str = "rms"
    seed: int = 0


FULL = DemoPlan("full", n_files=15, utterances_per_file=18, samples=SAMPLE_SENTENCES)
QUICK = DemoPlan(
    "quick", n_files=2, utterances_per_file=6, samples=SAMPLE_SENTENCES[:2],
    overrides=(
        "core_engine.n_trials=2", "core_engine.epochs_per_generation=1", "optimization.pruner=none",
        "optimization.hyperband.min_resource=1", "optimization.hyperband.max_resource=1",
        "registry.promotion_gate.min_attention_alignment_score=null",
        "resources.checkpointing.save_frequency_steps=1000",
        *(f"training.hparams.{k}={v}" for k, v in TINY_HPARAMS.items()),
    ),
)


@dataclass
class Demo:
    out: Path
    plan: DemoPlan
    minutes_budget: float
    workers: int
    config: Path
    console: Any
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> what its marker holds

    raw_dir = property(lambda self: self.out / "raw")
    seg_dir = property(lambda self: self.out / "segments")
    dataset_dir = property(lambda self: self.out / "dataset")
    tune_dir = property(lambda self: self.out / "tune")
    samples_dir = property(lambda self: self.out / "samples")
    report_dir = property(lambda self: self.out / "report")
    tracking_uri = property(lambda self: embedded_tracking_uri(self.tune_dir))
    storage = property(lambda self: f"sqlite:///{self.tune_dir / 'optuna.db'}")

    def tune_overrides(self, budget_min: float) -> list[str]:
        return [f"training.dataset={self.dataset_dir}", f"core_engine.work_dir={self.tune_dir}",
                f"core_engine.storage={self.storage}",
                f"monitoring.platforms.mlflow.tracking_uri={self.tracking_uri}",
                f"core_engine.wall_clock_budget_minutes={budget_min:.2f}", *self.plan.overrides]

    def tuner_config(self, budget_min: float = 1.0) -> Any:
        from ttsops.config import load_config

        return load_config(self.config, self.tune_overrides(budget_min))

    @property
    def study_dir(self) -> Path:
        return self.tune_dir / self.tuner_config().core_engine.study_name


# --- markers ----------------------------------------------------------------------------------------
def read_marker(out: Path, stage: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / MARKERS / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return None


def write_marker(out: Path, stage: str, info: dict[str, Any]) -> None:
    """Atomic: a crash leaves the old marker or none, never half of one."""
    atomic_write_json(out / MARKERS / f"{stage}.json", info, indent=1, default=str)


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
                    "generation": mv.tags.get("ttsops.generation"), "objective": mv.tags.get("objective")}
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
    from ttsops.data.recordings import word_error_rate

    wer = word_error_rate([i["text"] for i in items], [i["asr"] for i in items])
    (d.samples_dir / "samples.json").write_text(json.dumps(items, indent=1))
    d.console.print(f"ASR word error rate on the samples: {wer:.2f} (1.0: nothing recognisable yet)")
    return {"samples": len(items), "asr_wer": round(wer, 3)}


def stage_report(d: Demo) -> dict[str, Any]:
    from ttsops.report import Sample, build_report

    samples = [Sample(s["text"], Path(s["wav"]), Path(s["alignment"]), s.get("asr"))
               for s in json.loads((d.samples_dir / "samples.json").read_text())]
    path = build_report(d.study_dir, d.report_dir, tracking_uri=d.tracking_uri, storage=d.storage,
                        dataset_dir=d.dataset_dir, samples=samples, facts=_facts(d),
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
    ("report", "HTML report", stage_report),
]


# --- what to print --------------------------------------------------------------------------------
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


def _facts(d: Demo) -> dict[str, str]:
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
    if version.get("version"):
        facts["dataset version (DVC)"] = str(version["version"])
    reg = d.info.get("registry", {})
    if reg:
        facts["champion"] = (f"models:/{reg['model']}@{reg['alias']} = v{reg['version']}" if reg.get("version")
                             else f"none passed the promotion gate (best: generation {reg.get('best_generation')})")
    return facts


def print_where(d: Demo, elapsed_s: float) -> None:
    from rich.table import Table

    t = Table(title=f"ttsops demo ({d.plan.name}) done in {elapsed_s / 60:.1f} min (this session)",
              show_header=False)
    for what, path in [("raw recordings", d.raw_dir), ("clips + transcripts", d.seg_dir),
                       ("dataset (LJSpeech, DVC-versioned)", d.dataset_dir),
                       ("study (best_model.pt, generations/)", d.study_dir),
                       ("MLflow store", d.tune_dir / "mlflow.db"), ("Optuna storage", d.tune_dir / "optuna.db"),
                       ("samples", d.samples_dir), ("report", d.report_dir / "index.html")]:
        t.add_row(what, str(path))
    d.console.print(t)
    d.console.print("stage times: " + ", ".join(f"{s} {d.info[s]['seconds']:.0f} s" for s, _, _ in STAGES
                                                if "seconds" in d.info.get(s, {})))
    for what, cmd in commands(d).items():
        d.console.print(f"[bold]{what}[/]:  {cmd}", soft_wrap=True)


# --- CLI ---------------------------------------------------------------------------------------------
def run(d: Demo, force: bool = False) -> None:
    rerun = force
    for i, (stage, title, fn) in enumerate(STAGES, 1):
        d.console.rule(f"[bold cyan]{i}/{len(STAGES)}  {stage}[/]: {title}")
        marker = None if rerun else read_marker(d.out, stage)
        if marker is not None and marker.get("plan") not in (None, d.plan.name):
            raise ConfigError(f"{d.out} holds a {marker['plan']!r} demo; use another --out for {d.plan.name!r}")
        if marker is not None:
            d.info[stage] = marker
            d.console.print(f"[dim]done earlier ({marker.get('seconds', 0):.0f} s): skipped[/]")
            continue
        rerun = True  # everything after a stage that ran again is stale
        t0 = time.monotonic()
        info = fn(d)
        info.update(plan=d.plan.name, seconds=round(time.monotonic() - t0, 1))
        d.info[stage] = info
        write_marker(d.out, stage, info)
        d.console.print(f"[green]{stage} done in {info['seconds']:.0f} s[/]")


def main(argv: list[str] | None = None) -> int:
    from rich import get_console

    ap = argparse.ArgumentParser(prog="ttsops demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    ap.add_argument("--minutes-budget", type=float, default=20.0,
                    help="wall-clock budget of the whole demo in minutes; tuning gets what is left (20)")
    ap.add_argument("--quick", action="store_true", help="tiny variant: a few clips, two 1-epoch generations")
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="tuner config")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="data-plane processes")
    ap.add_argument("--force", action="store_true", help="run every stage again (the study still resumes)")
    args = ap.parse_args(argv)
    if args.minutes_budget <= 0:
        raise ConfigError(f"--minutes-budget must be > 0, got {args.minutes_budget}")
    if not Path(args.config).is_file():
        raise ConfigError(f"tuner config not found: {args.config}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    d = Demo(Path(args.out).resolve(), QUICK if args.quick else FULL, args.minutes_budget,
             max(1, args.workers), Path(args.config).resolve(), get_console())
    d.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        run(d, args.force)
    except KeyboardInterrupt:
        d.console.print("[yellow]interrupted: run the same command again to resume[/]")
        return 130
    print_where(d, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
