"""The report page: the learning-curve plot, the template's context, ``build_report`` and the CLI."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ttsops.config import AttentionMonitoringConfig
from ttsops.errors import ConfigError
from ttsops.infra.atomic import atomic_write_text
from ttsops.infra.plotting import figure_png, pyplot
from ttsops.infra.tracking import Tag
from ttsops.report.collect import (
    CURVE_METRICS,
    Generation,
    Sample,
    alignment_timeline,
    collect_generations,
    early_stop_notes,
    find_parent,
    latest_alignment,
    optuna_trials,
    read_decision_files,
    study_defaults,
)

logger = logging.getLogger(__name__)

TEMPLATE = "template.html"


# --- plots -----------------------------------------------------------------------------------------
def plot_curves(gens: Sequence[Generation], alignment_threshold: float | None = None) -> bytes:
    """2x3 PNG: val_loss, alignment, objective, intelligibility (ASR WER of the held-out sentences) and
    free-running distance against the global step (one line per generation; warm-started ones continue
    the step of their parent), and the final objective of each generation with the best so far. The
    alignment panel marks the study's ``alignment_threshold`` (the config's default when not given)."""
    fig, axes = pyplot().subplots(2, 3, figsize=(16, 7.5))
    titles = {"val_loss": "val_loss", "attention_alignment_score": "attention_alignment_score (diagonality)",
              "objective": "objective (tuner, lower is better)",
              "asr_wer": "asr_wer: what the ASR understands (held-out, lower is better)",
              "free_running_distance": "free_running_distance (own output vs recording)"}
    for ax, key in zip(axes.flat[:5], CURVE_METRICS, strict=True):
        drawn = False
        for g in gens:
            pts = g.curves.get(key) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"gen {g.trial} ({g.state})")
                drawn = True
        if key == "attention_alignment_score":
            thr = AttentionMonitoringConfig().alignment_threshold if alignment_threshold is None else alignment_threshold
            ax.axhline(thr, color="grey", ls="--", lw=0.8, label=f"alignment_threshold {thr:g}")
        ax.set(title=titles[key], xlabel="global step")
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax = axes.flat[5]
    done = [(g.trial, g.objective, g.state) for g in gens if g.objective is not None and math.isfinite(g.objective)]
    colours = {"COMPLETE": "tab:green", "PRUNED": "tab:orange", "FAIL": "tab:red"}
    for trial, value, state in done:
        ax.scatter(trial, value, color=colours.get(state, "tab:grey"), zorder=3)
    complete = [(t, v) for t, v, s in done if s == "COMPLETE"]
    if complete:
        best, xs, ys = math.inf, [], []
        for t, v in complete:
            best = min(best, v)
            xs.append(t)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
        ax.legend(fontsize=7)
    ax.set(title="objective per generation (green complete, orange pruned)", xlabel="generation (trial)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return figure_png(fig, dpi=80, tight=False)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    try:
        f = float(v)
        return f"{f:.4g}" if "." in str(v) or "e" in str(v).lower() else str(v)
    except (TypeError, ValueError):
        return str(v)


# --- the page --------------------------------------------------------------------------------------
def _dataset_section(dataset_dir: Path | None) -> dict[str, Any] | None:
    if dataset_dir is None or not (dataset_dir / "report.json").is_file():
        return None
    rep = json.loads((dataset_dir / "report.json").read_text())
    png = dataset_dir / "report.png"
    d, rate = rep.get("duration_s", {}), rep.get("speaking_rate", {})
    rows = [("clips", rep.get("clips")), ("total", f"{rep.get('total_seconds', 0) / 60:.1f} min"),
            ("train / val", f"{rep.get('splits', {}).get('train')} / {rep.get('splits', {}).get('val')}"),
            ("clip length (s): min / median / max",
             f"{d.get('min')} / {d.get('median')} / {d.get('max')}"),
            ("speaking rate (words/s)", rate.get("overall_words_per_s")),
            ("low-confidence clips kept", rep.get("low_confidence_kept")),
            ("rejected", ", ".join(f"{k}: {v}" for k, v in rep.get("rejected", {}).items()) or "none"),
            ("speech lost per rejection reason (s)",
             ", ".join(f"{k}: {v}" for k, v in rep.get("rejected_speech_s", {}).items()) or "none"),
            ("estimated SNR of the segmented clips (dB): min / median / max",
             " / ".join(str(snr.get(k)) for k in ("min", "median", "max")) if (snr := rep.get("snr_db", {})).get("clips")
             else "not recorded")]
    asr = dataset_dir / "asr_quality.json"
    if asr.is_file():
        q = json.loads(asr.read_text())
        rows.append(("ASR word error rate (vs the spoken text)", f"{q.get('asr_wer')} over {q.get('clips_matched')} clips"))
    return {"dir": str(dataset_dir), "rows": rows, "json": json.dumps(rep, indent=1),
            "histogram": _data_uri(png.read_bytes(), "image/png") if png.is_file() else None}


def _audio_src(wav: Path, out_dir: Path, embed: bool) -> str:
    if embed:
        return _data_uri(wav.read_bytes(), "audio/wav")
    assets = out_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wav, assets / wav.name)
    return f"assets/{wav.name}"


def _decisions(parent: Any, gens: Sequence[Generation], files: list[str]) -> list[dict[str, Any]]:
    out = []
    for g in gens:
        items = [f"start: {g.start_mode or '?'}" + (f" from {g.source}" if g.source not in ("", "none") else "")
                 + (f" ({g.plan_reason})" if g.plan_reason else ""),
                 f"end: {g.state}" + (f" ({g.end_reason})" if g.end_reason else "")
                 + (f", objective {_fmt(g.objective)}" if g.objective is not None else ""), *g.decisions]
        out.append({"title": f"generation {g.trial}", "items": items})
    tags = parent.data.tags
    study = [f"status: {tags.get(Tag.STATUS, parent.info.status)}",
             f"stop reason: {tags.get(Tag.STOP_REASON, 'still running')}",
             *early_stop_notes(tags), *files]
    out.append({"title": "study", "items": study})
    return out


def build_report(
    study_dir: str | Path, out_dir: str | Path | None = None, *, tracking_uri: str | None = None,
    storage: str | None = None, dataset_dir: str | Path | None = None, samples: Sequence[Sample] = (),
    facts: Mapping[str, str] | None = None, commands: Mapping[str, str] | None = None,
    study_name: str | None = None, embed_audio: bool = True,
) -> Path:
    """Write ``<out_dir>/index.html`` (default ``<study_dir>/report``) and return its path.

    ``tracking_uri``, ``storage`` and ``dataset_dir`` default to what ``tuner_config.yaml`` in the
    study directory says; the study name defaults to the directory's name."""
    from mlflow import MlflowClient

    study_dir = Path(study_dir).resolve()
    out = Path(out_dir) if out_dir else study_dir / "report"
    defaults = study_defaults(study_dir)
    uri = tracking_uri or defaults["tracking_uri"]
    if not uri:
        raise ConfigError(f"{study_dir}: no tuner_config.yaml: pass the MLflow tracking URI")
    name = study_name or study_dir.name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = find_parent(client, name)
    gens = collect_generations(client, parent, optuna_trials(storage or defaults["storage"], name))
    for g in gens:
        g.alignment = latest_alignment(client, study_dir / "generations" / f"gen_{g.trial:04d}", g.run_id)
    data_dir = dataset_dir or defaults["dataset"]
    finished = [g for g in gens if g.state == "COMPLETE" and g.objective is not None]
    best = min(finished, key=lambda g: g.objective or 0.0) if finished else None
    out.mkdir(parents=True, exist_ok=True)
    html = _render({
        "study": name, "generated": datetime.now().strftime("%Y-%m-%d %H:%M"), "tracking_uri": uri,
        "status": parent.data.tags.get(Tag.STATUS, parent.info.status),
        "preemptions": sum(g.preemptions for g in gens),
        "stop_reason": parent.data.tags.get(Tag.STOP_REASON, ""),
        "best": best, "facts": dict(facts or {}), "commands": dict(commands or {}),
        "curves": _data_uri(plot_curves(gens, _threshold(defaults)), "image/png") if gens else None,
        "generations": [_generation_row(g) for g in gens],
        "decisions": _decisions(parent, gens, read_decision_files(study_dir)),
        "timeline": [{"caption": c, "src": _data_uri(png, "image/png")} for c, png in alignment_timeline(study_dir)],
        "alignments": [{"trial": g.trial, "state": g.state, "caption": g.alignment[0],
                        "src": _data_uri(g.alignment[1], "image/png")} for g in gens if g.alignment],
        "samples": [_sample_row(s, out, embed_audio) for s in samples],
        "dataset": _dataset_section(Path(data_dir) if data_dir else None),
    })
    path = atomic_write_text(out / "index.html", html)
    logger.info("report: %s (%d generations, %d samples)", path, len(gens), len(samples))
    return path


def _threshold(defaults: Mapping[str, Any]) -> float | None:
    value = defaults.get("alignment_threshold")
    return float(value) if isinstance(value, int | float) else None


def _generation_row(g: Generation) -> dict[str, Any]:
    wer = g.curves.get("asr_wer") or []
    return {**g.__dict__, "objective": _fmt(g.objective), "seconds": _fmt(g.seconds),
            "asr_wer": _fmt(wer[-1][1]) if wer else "",
            "params": ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(g.params.items())),
            "source": g.source.split(":")[0]}


def _sample_row(s: Sample, out: Path, embed_audio: bool) -> dict[str, Any]:
    png = Path(s.alignment) if s.alignment else None
    return {"text": s.text, "asr": s.asr, "audio": _audio_src(Path(s.wav), out, embed_audio),
            "alignment": _data_uri(png.read_bytes(), "image/png") if png and png.is_file() else None}


def _render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(**context)


def _samples_from_dir(path: Path) -> list[Sample]:
    """``samples.json`` as the demo writes it: [{"text", "wav", "alignment"}, ...]."""
    manifest = path / "samples.json"
    if not manifest.is_file():
        raise ConfigError(f"--samples {path}: no samples.json there")
    items = json.loads(manifest.read_text())
    return [Sample(i["text"], path / Path(i["wav"]).name,
                   path / Path(i["alignment"]).name if i.get("alignment") else None, i.get("asr"))
            for i in items]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ttsops report", description="HTML report of a study")
    ap.add_argument("study_dir", help="the tuner's study directory (<work_dir>/<study_name>)")
    ap.add_argument("--out", default=None, help="output directory (default: STUDY_DIR/report)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow URI (default: from tuner_config.yaml)")
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: from tuner_config.yaml)")
    ap.add_argument("--dataset", default=None, help="dataset directory with report.json (default: the config's)")
    ap.add_argument("--samples", default=None, help="directory with samples.json (as `ttsops demo` writes)")
    ap.add_argument("--study-name", default=None, help="default: the study directory's name")
    ap.add_argument("--no-embed-audio", action="store_true", help="copy wavs to assets/ instead of inlining")
    args = ap.parse_args(argv)
    study_dir = Path(args.study_dir)
    if not study_dir.is_dir():
        raise ConfigError(f"study directory not found: {study_dir}")
    samples = _samples_from_dir(Path(args.samples)) if args.samples else []
    path = build_report(study_dir, args.out, tracking_uri=args.tracking_uri, storage=args.storage,
                        dataset_dir=args.dataset, samples=samples, study_name=args.study_name,
                        embed_audio=not args.no_embed_audio)
    print(path)
    return 0
