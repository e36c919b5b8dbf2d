"""What the report reads (see the package docstring): the study's MLflow runs and their tags, the
Optuna trials, alignment images and decision files in the study directory."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsops.errors import DataError
from ttsops.infra.tracking import ROLE_STUDY, Tag, early_stop_tag, tracking_uri

logger = logging.getLogger(__name__)

CURVE_METRICS = ("val_loss", "attention_alignment_score", "objective", "asr_wer", "free_running_distance")
STATE_NAMES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "interrupted": "FAIL"}
PREEMPTED = "PREEMPTED"  # a FAIL that was a preemption and was queued again: it is not a failure
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
    state: str  # COMPLETE | PRUNED | FAIL | PREEMPTED | RUNNING
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
    preemptions: int = 0  # times killed from outside (or its tuner died) and resumed


# --- reading -------------------------------------------------------------------------------------
def study_defaults(study_dir: Path) -> dict[str, Any]:
    """Tracking URI, Optuna storage, dataset, registry alias and alignment threshold the tuner used
    (tuner_config.yaml)."""
    import yaml

    path = study_dir / "tuner_config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"tracking_uri": None, "storage": None, "dataset": None, "alias": None, "alignment_threshold": None}
    work = study_dir.parent.resolve()
    core = cfg.get("core_engine", {})
    mlflow = cfg.get("monitoring", {}).get("platforms", {}).get("mlflow", {})
    return {"tracking_uri": tracking_uri(mlflow.get("tracking_uri"), work),
            "storage": core.get("storage") or f"sqlite:///{work / 'optuna.db'}",
            "dataset": cfg.get("training", {}).get("dataset"),
            "alias": cfg.get("registry", {}).get("alias"),
            "alignment_threshold": cfg.get("smart_early_stopping", {}).get("attention_monitoring", {}).get("alignment_threshold")}


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


def early_stop_notes(tags: Mapping[str, str]) -> list[str]:
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
        if state == "FAIL" and tags.get(Tag.REQUEUED) == "true":
            state = PREEMPTED
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
        g.preemptions = int(tags.get(Tag.PREEMPTIONS) or 0)
        retry = [f"re-runs the params of generation {tags[Tag.RETRY_OF_TRIAL]}, which was interrupted"
                 ] if tags.get(Tag.RETRY_OF_TRIAL) else []
        if g.preemptions:
            retry.append(f"preempted {g.preemptions} time(s) (killed from outside, or its tuner died); "
                         "resumed from its newest checkpoint" + ("" if state != PREEMPTED else " in a new trial"))
        g.decisions = retry + early_stop_notes(tags) + _registry_notes(client, r.info.run_id)
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
