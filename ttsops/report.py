"""One HTML page about a study, for people: ``ttsops report STUDY_DIR [--out DIR]``.

Everything is read from where the pipeline already keeps it:

* MLflow (``MlflowClient(tracking_uri)``): the study's parent run (tag ``ttsops.role=study``) and
  its child runs, one per generation: metric histories (learning curves), params ``tuner.*``, the
  tuner's tags (restart mode, warm-start source, plan reason, end state and reason, any
  ``early_stop.*`` decision tags), registered model versions and their aliases;
* the Optuna storage, when reachable: trial state (COMPLETE / PRUNED / FAIL) and value;
* the study directory: ``tuner_config.yaml`` (default tracking URI, storage and dataset), the
  free-running alignment images train.py writes under ``generations/gen_*/samples/step_*/``
  (else the same files from the run's MLflow artifacts), ``*decision*.json[l]`` files;
* the dataset directory: ``report.json`` / ``report.png`` of ``ttsops data build``.

The page is one file (``index.html``): plots (matplotlib, Agg) and images are embedded as base64,
and so is audio unless ``embed_audio=False`` (then the wavs are copied to ``assets/`` beside it).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError, DataError
from ttsops.infra.plotting import figure_png, pyplot
from ttsops.infra.tracking import ROLE_STUDY, Tag, early_stop_tag, tracking_uri

logger = logging.getLogger(__name__)

TEMPLATE = "report_template.html"
CURVE_METRICS = ("val_loss", "attention_alignment_score", "objective")
STATE_NAMES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "interrupted": "FAIL"}
ALIGNMENT_FILE = "free_running_alignment.png"


@dataclass(frozen=True)
class Sample:
    """A synthesised sentence: its wav and (optionally) its alignment image."""

    text: str
    wav: Path
    alignment: Path | None = None
    asr: str | None = None  # what an ASR heard in it (a rough intelligibility check)


@dataclass
class Generation:
    trial: int
    run_id: str
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING
    objective: float | None
    epochs: int | None
    start_mode: str
    source: str
    plan_reason: str
    end_reason: str
    params: dict[str, str]
    seconds: float | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    alignment: tuple[str, bytes] | None = None  # (caption, png)


# --- reading -------------------------------------------------------------------------------------
def study_defaults(study_dir: Path) -> dict[str, str | None]:
    """Tracking URI, Optuna storage, dataset and registry alias the tuner used (tuner_config.yaml)."""
    import yaml

    path = study_dir / "tuner_config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"tracking_uri": None, "storage": None, "dataset": None, "alias": None}
    work = study_dir.parent.resolve()
    core = cfg.get("core_engine", {})
    mlflow = cfg.get("monitoring", {}).get("platforms", {}).get("mlflow", {})
    return {"tracking_uri": tracking_uri(mlflow.get("tracking_uri"), work),
            "storage": core.get("storage") or f"sqlite:///{work / 'optuna.db'}",
            "dataset": cfg.get("training", {}).get("dataset"),
            "alias": cfg.get("registry", {}).get("alias")}


def find_parent(client: Any, study: str) -> Any:
    """The study's parent run (the newest if several experiments hold one)."""
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`{Tag.STUDY}` = '{study}' and tags.`{Tag.ROLE}` = '{ROLE_STUDY}'",
                              order_by=["attributes.start_time DESC"], max_results=5) if exps else []
    if not runs:
        raise DataError(f"no MLflow parent run for study {study!r} (tag {Tag.STUDY}) in the store")
    return runs[0]


def _curve(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    by_step: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, key):  # a retried step: the newest value wins
        if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
            by_step[m.step] = (m.timestamp, float(m.value))
    return [(s, v) for s, (_, v) in sorted(by_step.items())]


def _registry_notes(client: Any, run_id: str) -> list[str]:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"run_id='{run_id}'")
    except MlflowException:
        return []
    notes = []
    for mv in versions:
        aliases = getattr(mv, "aliases", None) or []
        notes.append(f"registered as {mv.name} v{mv.version}; promotion gate: {mv.tags.get(Tag.GATE, '?')}"
                     + (f"; alias {', '.join(aliases)}" if aliases else ""))
    return notes


def _early_stop_notes(tags: Mapping[str, str]) -> list[str]:
    out = []
    for level in ("trial", "study"):
        action = tags.get(early_stop_tag(level, "action"))
        if action:
            out.append(f"early stop ({level}): {action}, {tags.get(early_stop_tag(level, 'reason'), '')} "
                       f"(vote {tags.get(early_stop_tag(level, 'score'), '?')}): "
                       f"{tags.get(early_stop_tag(level, 'message'), '')}")
    return out


def collect_generations(client: Any, parent: Any, trials: Mapping[int, Any] | None = None) -> list[Generation]:
    """One :class:`Generation` per child run of ``parent``, in trial order; ``trials`` (Optuna
    FrozenTrials by number) give the state and value when available."""
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.`{Tag.PARENT_RUN}` = '{parent.info.run_id}'", max_results=1000)
    gens = []
    for r in runs:
        tags, trial_no = r.data.tags, r.data.tags.get(Tag.TRIAL)
        if trial_no is None or not trial_no.isdigit():
            continue
        n, t = int(trial_no), (trials or {}).get(int(trial_no))
        state = t.state.name if t is not None else STATE_NAMES.get(tags.get(Tag.STATE, ""), r.info.status)
        value = t.value if t is not None and t.value is not None else r.data.metrics.get("objective")
        seconds = (t.duration.total_seconds() if t is not None and t.duration else
                   (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None)
        epochs = r.data.metrics.get("tuner_epoch")
        g = Generation(n, r.info.run_id, state, value, int(epochs) if epochs is not None else None,
                       tags.get(Tag.RESTART_MODE, ""), tags.get(Tag.WARM_START_SOURCE, ""),
                       tags.get(Tag.PLAN_REASON, ""), tags.get(Tag.REASON, ""),
                       {k.removeprefix("tuner."): v for k, v in r.data.params.items() if k.startswith("tuner.")},
                       seconds)
        g.curves = {k: _curve(client, r.info.run_id, k) for k in CURVE_METRICS}
        retry = [f"re-runs the params of generation {tags[Tag.RETRY_OF_TRIAL]}, which was interrupted"
                 ] if tags.get(Tag.RETRY_OF_TRIAL) else []
        g.decisions = retry + _early_stop_notes(tags) + _registry_notes(client, r.info.run_id)
        gens.append(g)
    return sorted(gens, key=lambda g: g.trial)


def optuna_trials(storage: str | None, study: str) -> dict[int, Any]:
    """Trials by number, or {} when the storage is not there (the report works from MLflow alone)."""
    if not storage:
        return {}
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return {}
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return {t.number: t for t in optuna.load_study(study_name=study, storage=storage).get_trials()}
    except Exception as e:  # a report never fails because the optional source is unreadable
        logger.warning("optuna storage %s: %s (states and values come from MLflow)", storage, e)
        return {}


def latest_alignment(client: Any, gen_dir: Path, run_id: str) -> tuple[str, bytes] | None:
    """The newest free-running alignment of a generation: from its directory, else its artifacts."""
    found = sorted(gen_dir.glob(f"samples/step_*/{ALIGNMENT_FILE}"))
    if found:
        return f"step {int(found[-1].parent.name.removeprefix('step_'))}", found[-1].read_bytes()
    from mlflow.exceptions import MlflowException

    try:
        steps = sorted(a.path for a in client.list_artifacts(run_id, "samples") if a.is_dir)
        if not steps:
            return None
        local = client.download_artifacts(run_id, f"{steps[-1]}/{ALIGNMENT_FILE}")
        return f"step {int(steps[-1].rsplit('step_', 1)[-1])}", Path(local).read_bytes()
    except (MlflowException, OSError, ValueError):
        return None


def alignment_timeline(study_dir: Path, k: int = 6) -> list[tuple[str, bytes]]:
    """Up to ``k`` free-running alignments evenly spread over the study's global steps (all
    generations), oldest first: how the attention formed."""
    found = []
    for path in study_dir.glob(f"generations/gen_*/samples/step_*/{ALIGNMENT_FILE}"):
        try:
            found.append((int(path.parent.name.removeprefix("step_")),
                          int(path.parents[2].name.removeprefix("gen_")), path))
        except ValueError:
            continue
    found.sort()
    if len(found) > k:
        found = [found[round(i * (len(found) - 1) / (k - 1))] for i in range(k)]
    return [(f"generation {gen}, step {step}", path.read_bytes()) for step, gen, path in found]


def read_decision_files(study_dir: Path) -> list[str]:
    """Lines of any ``*decision*.json[l]`` the tuner keeps in the study directory."""
    out = []
    for path in sorted(study_dir.glob("*decision*.json*")):
        try:
            text = path.read_text()
            items = [json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" \
                else json.loads(text)
        except (OSError, ValueError):
            continue
        for it in items if isinstance(items, list) else [items]:
            if isinstance(it, dict):
                head = " ".join(str(it[k]) for k in ("level", "action", "reason") if k in it)
                out.append(f"{path.name}: {head}: {it.get('message', '')}".strip())
    return out


# --- plots -----------------------------------------------------------------------------------------
def plot_curves(gens: Sequence[Generation]) -> bytes:
    """2x2 PNG: val_loss, alignment and objective against the global step (one line per
    generation; warm-started ones continue the step of their parent), and the final objective of
    each generation with the best so far."""
    fig, axes = pyplot().subplots(2, 2, figsize=(12, 7.5))
    titles = {"val_loss": "val_loss", "attention_alignment_score": "attention_alignment_score (diagonality)",
              "objective": "objective (tuner, lower is better)"}
    for ax, key in zip(axes.flat[:3], CURVE_METRICS, strict=True):
        drawn = False
        for g in gens:
            pts = g.curves.get(key) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"gen {g.trial} ({g.state})")
                drawn = True
        if key == "attention_alignment_score":
            ax.axhline(0.8, color="grey", ls="--", lw=0.8)
        ax.set(title=titles[key], xlabel="global step")
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax = axes.flat[3]
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
            ("rejected", ", ".join(f"{k}: {v}" for k, v in rep.get("rejected", {}).items()) or "none")]
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
             *_early_stop_notes(tags), *files]
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
        "stop_reason": parent.data.tags.get(Tag.STOP_REASON, ""),
        "best": best, "facts": dict(facts or {}), "commands": dict(commands or {}),
        "curves": _data_uri(plot_curves(gens), "image/png") if gens else None,
        "generations": [{**g.__dict__, "objective": _fmt(g.objective), "seconds": _fmt(g.seconds),
                         "params": ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(g.params.items())),
                         "source": g.source.split(":")[0]} for g in gens],
        "decisions": _decisions(parent, gens, read_decision_files(study_dir)),
        "timeline": [{"caption": c, "src": _data_uri(png, "image/png")} for c, png in alignment_timeline(study_dir)],
        "alignments": [{"trial": g.trial, "state": g.state, "caption": g.alignment[0],
                        "src": _data_uri(g.alignment[1], "image/png")} for g in gens if g.alignment],
        "samples": [{"text": s.text, "asr": s.asr, "audio": _audio_src(Path(s.wav), out, embed_audio),
                     "alignment": _data_uri(Path(s.alignment).read_bytes(), "image/png")
                     if s.alignment and Path(s.alignment).is_file() else None} for s in samples],
        "dataset": _dataset_section(Path(data_dir) if data_dir else None),
    })
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    logger.info("report: %s (%d generations, %d samples)", path, len(gens), len(samples))
    return path


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
