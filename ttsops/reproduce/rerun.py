"""Rerun recorded train.py runs: the chain of runs a warm start came from, each as a real train.py
process logging into a new MLflow run tagged ``ttsops.reproduces=<original run id>``.

Work directory (``-o``)::

    data/<version>/<dataset>/    the recorded DVC version, restored (ttsops.data.versioning.checkout_copy)
    <run id>/                    one per rerun: config.yaml and hparams.json as recorded, command.txt,
                                 train.log, run/ (train.py's output directory)
    report.json                  the comparisons (ttsops.reproduce.compare)

A run that warm-started (or exactly resumed) from another run's checkpoint needs those weights:
``parent="reproduce"`` reruns that run first, up to the step the checkpoint was taken at, and
checks that the weights it ends with are the ones the run loaded (their sha256 is recorded);
``parent="artifact"`` takes the checkpoint as recorded, from its path or from the parent run's
registry artifact (``model/artifacts/best_model.pt`` in the pyfunc layout, or a plain
``model/best_model.pt``), if its weights are the recorded ones.

Where a rerun stops: where the original did. A run that finished trains all its epochs; a run that
stopped (SIGINT from the tuner, ``--max_steps``) stops at its final step, after that step's
validation if the original logged one there (``--validate_at_max_steps``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsops.errors import ConfigError, ReproduceError
from ttsops.infra.atomic import atomic_write_json, atomic_write_text
from ttsops.infra.gitinfo import GitState
from ttsops.infra.kv import format_hparams
from ttsops.infra.tracking import Tag
from ttsops.reproduce.checks import check_code, check_single_process, environment_warnings, prepare_dataset
from ttsops.reproduce.compare import DEFAULT_RTOL, MetricDiff, Verdict, compare_curves, verdict
from ttsops.reproduce.record import RunRecord, Source, read_curves, read_record

Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    tracking_uri: str
    out: Path
    steps: int | None = None  # rerun the target only this far
    parent: str = "reproduce"  # reproduce | artifact
    threads: int | None = None  # None: as recorded
    device: str | None = None  # None: as recorded
    dataset: Path | None = None
    data_repo: Path | None = None
    rtol: float = DEFAULT_RTOL


@dataclass
class Rerun:
    """One original run and its reproduction."""

    record: RunRecord
    run_id: str = ""  # the reproduction's MLflow run
    out_dir: Path = Path()
    dataset: Path = Path()
    source: Path | None = None  # the checkpoint it starts from, when taken as recorded
    stop: tuple[int | None, bool] = (None, False)  # (--max_steps, --validate_at_max_steps)
    warnings: list[str] = field(default_factory=list)
    diffs: list[MetricDiff] = field(default_factory=list)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    weights: str | None = None  # how the final weights compare with what was recorded
    weights_identical: bool | None = None
    verdict: Verdict = Verdict("differs", "not run")

    def summary(self) -> dict[str, Any]:
        return {"original": self.record.run_id, "reproduction": self.run_id, "output": str(self.out_dir),
                "source": None if self.source is None else str(self.source), "max_steps": self.stop[0], "verdict": self.verdict.label, "reason": self.verdict.reason,
                "weights": self.weights, "warnings": self.warnings,
                "metrics": [d.__dict__ for d in self.diffs]}


def stop_point(record: RunRecord, at_step: int | None = None) -> tuple[int | None, bool]:
    """``(--max_steps, --validate_at_max_steps)`` that end a rerun where the original ended (or at
    ``at_step``): nothing for a run that finished there, else its step and whether it validated it."""
    step = record.final_step if at_step is None else at_step
    if record.finished and step >= record.final_step:
        return None, False
    return step, record.validated_at(step)


def parent_chain(client: Any, record: RunRecord, mode: str) -> list[RunRecord]:
    """The runs to rerun, oldest first, ending with ``record``: with ``mode="reproduce"`` every run
    whose checkpoint a later one started from (as far as they are recorded)."""
    chain = [record]
    while mode == "reproduce" and (src := chain[0].source) is not None:
        if src.run_id is None or src.run_id == chain[0].run_id:
            break  # the source run is not recorded: its checkpoint is taken as recorded
        if any(r.run_id == src.run_id for r in chain):
            raise ReproduceError(f"{chain[0].label()}: its source run {src.run_id} is already in the chain")
        try:
            chain.insert(0, read_record(client, src.run_id))
        except ReproduceError as e:
            raise ReproduceError(f"{chain[0].label()} started from run {src.run_id}, which cannot be reproduced "
                                 f"({e}); --parent artifact takes its checkpoint as recorded") from None
    return chain


def recorded_checkpoint(client: Any, record: RunRecord, work: Path) -> Path:
    """The checkpoint ``record`` started from, as recorded: its path, else the source run's registry
    artifact; only if its weights are the recorded ones."""
    from ttsops.model.checkpoint import load_checkpoint
    from ttsops.registry import ARTIFACT_DIR, BEST_FILE
    from ttsops.train.reproducibility import weights_digest

    src = record.source
    if src is None:
        raise ReproduceError(f"{record.label()} started from no checkpoint")
    artifacts = (f"{ARTIFACT_DIR}/artifacts/{BEST_FILE}", f"{ARTIFACT_DIR}/{BEST_FILE}")  # pyfunc layout, plain file
    for path in _candidates(client, src, work / "sources", artifacts):
        if src.weights is None or weights_digest(load_checkpoint(path)["model"]) == src.weights:
            return path
    raise ReproduceError(
        f"{record.label()}: the checkpoint it started from ({src.path or 'no path'}, step {src.step}) is gone or "
        f"holds other weights, and run {src.run_id or '(not recorded)'} has no artifact {' or '.join(artifacts)} "
        f"with the recorded ones (sha256 {(src.weights or '?')[:12]}); --parent reproduce reruns it")


def _candidates(client: Any, src: Source, work: Path, artifacts: tuple[str, ...]) -> Iterator[Path]:
    """The recorded file, then (downloaded only if needed) the source run's registry artifact."""
    from mlflow.exceptions import MlflowException

    if src.path and Path(src.path).is_file():
        yield Path(src.path)
    if src.run_id:
        dst = work / src.run_id
        dst.mkdir(parents=True, exist_ok=True)
        for artifact in artifacts:
            try:
                got = Path(client.download_artifacts(src.run_id, artifact, str(dst)))
            except (MlflowException, OSError):  # a run the registry never took has none
                continue
            yield got


def write_inputs(record: RunRecord, d: Path) -> tuple[Path, str]:
    """config.yaml and hparams.json as recorded; returns the config path and the --hparams string."""
    from ttsops.train.hparams import HParams

    try:
        hp = HParams().replace(**record.hparams)
    except ConfigError as e:
        raise ReproduceError(f"{record.label()}: recorded {e} (made by another version of ttsops?)") from None
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "config.yaml", record.config_yaml)
    atomic_write_json(d / "hparams.json", hp.to_dict())
    return d / "config.yaml", format_hparams(hp.to_dict())


def train_command(record: RunRecord, opts: Options, rerun: Rerun, dataset: Path,
                  source: Path | None, threads: int | None, device: str | None) -> list[str]:
    config, hparams = write_inputs(record, rerun.out_dir.parent)
    cmd = [sys.executable, "-m", "ttsops.train", "-o", str(rerun.out_dir), "--dataset", str(dataset),
           "--config", str(config), "--hparams", hparams, "--tracking_uri", opts.tracking_uri, "--run_id", rerun.run_id]
    if source is not None and record.source is not None:
        cmd += ["-c", str(source)] + (["--warm_start"] if record.source.mode == "warm_start" else [])
    max_steps, validate = rerun.stop
    if max_steps is not None:
        cmd += ["--max_steps", str(max_steps)] + (["--validate_at_max_steps"] if validate else [])
    if threads is not None:
        cmd.append(f"resources.num_threads={threads}")
    if device is not None:
        cmd.append(f"resources.device={device}")
    return cmd


def run_train(cmd: list[str], log: Path, threads: int | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    atomic_write_text(log.with_name("command.txt"), " ".join(cmd) + "\n")
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise ReproduceError(f"train.py exited {code} (log {log}): {tail[0].strip()[:300]}")


def open_run(client: Any, record: RunRecord) -> str:
    tags = {Tag.REPRODUCES: record.run_id}
    run = client.create_run(record.experiment_id, run_name=f"reproduce-{record.name or record.run_id[:8]}", tags=tags)
    return str(run.info.run_id)


def conclude(client: Any, rerun: Rerun, up_to_step: int | None, rtol: float) -> None:
    """Compare the finished rerun with its original; record the verdict on the reproduction's run."""
    from ttsops.train.reproducibility import weights_digest

    state = json.loads((rerun.out_dir / "train_state.json").read_text())
    rerun.curves = read_curves(client, rerun.run_id, sorted(client.get_run(rerun.run_id).data.metrics))
    rerun.diffs = compare_curves(rerun.record.curves, rerun.curves, up_to_step)
    recorded = rerun.record.tags.get(Tag.FINAL_WEIGHTS)
    at_end = up_to_step is None or up_to_step >= rerun.record.final_step
    if recorded and state.get("last_checkpoint") and rerun.weights_identical is None and at_end:
        from ttsops.model.checkpoint import load_checkpoint

        mine = weights_digest(load_checkpoint(state["last_checkpoint"])["model"])
        rerun.weights_identical = mine == recorded
        rerun.weights = ("final weights bit-identical to the original's" if mine == recorded
                         else f"final weights differ from the original's (sha256 {mine[:12]} vs {recorded[:12]})")
    rerun.verdict = verdict(rerun.diffs, rtol, rerun.weights_identical)
    client.set_tag(rerun.run_id, Tag.REPRODUCTION, f"{rerun.verdict.label}: {rerun.verdict.reason}"[:5000])
    client.log_dict(rerun.run_id, rerun.summary(), "reproduction.json")


def resources(record: RunRecord, opts: Options) -> tuple[int | None, str | None, str]:
    """Threads and device for the rerun (as recorded unless overridden) and this machine's device."""
    import torch

    from ttsops.train.reproducibility import describe_device

    threads = opts.threads or record.threads
    device = opts.device or record.device_type
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ReproduceError(f"{record.label()} trained on {record.tags.get(Tag.DEVICE, device)} and this machine has "
                             "no CUDA: --device cpu reruns it on the CPU (expect differences within the tolerance)")
    return threads, device, describe_device(torch.device(device or "cpu"))


def plan(client: Any, chain: list[RunRecord], opts: Options, here: GitState, allow_other_commit: bool) -> list[Rerun]:
    """Every check and every dataset restore of the chain, before anything trains."""
    from ttsops.train.reproducibility import library_versions

    reruns = []
    for i, record in enumerate(chain):
        child = chain[i + 1] if i + 1 < len(chain) else None
        r = Rerun(record, out_dir=opts.out / record.run_id / "run")
        if r.out_dir.exists() and any(r.out_dir.iterdir()):
            raise ReproduceError(f"{r.out_dir} holds an earlier reproduction: remove it or choose another -o")
        check_single_process(record)
        diff = check_code(record, here, allow_other_commit)
        threads, _, here_device = resources(record, opts)
        r.warnings = ([f"code: {diff}"] if diff else []) + environment_warnings(
            record, threads, here_device, library_versions())
        if opts.threads and record.threads is None:
            r.warnings.append("the run recorded no thread count")
        r.dataset = prepare_dataset(record, opts.out, opts.dataset, opts.data_repo)
        if child is not None and child.source is not None:
            r.stop = stop_point(record, at_step=child.source.step)
        else:
            r.stop = stop_point(record, None if opts.steps is None else min(opts.steps, record.final_step))
        if i == 0 and record.source is not None:
            r.source = recorded_checkpoint(client, record, opts.out)
        reruns.append(r)
    return reruns


def execute(client: Any, reruns: list[Rerun], opts: Options, say: Say) -> None:
    """Train the planned reruns oldest first; each one's final checkpoint starts the next."""
    from ttsops.model.checkpoint import load_checkpoint
    from ttsops.train.reproducibility import weights_digest

    for i, r in enumerate(reruns):
        threads, device, _ = resources(r.record, opts)
        r.run_id = open_run(client, r.record)
        cmd = train_command(r.record, opts, r, r.dataset, r.source, threads, device)
        say(f"rerunning {r.record.label()} as run {r.run_id[:12]}"
            + (f" to step {r.stop[0]}" if r.stop[0] is not None else "") + f" (log {r.out_dir.parent / 'train.log'})")
        try:
            run_train(cmd, r.out_dir.parent / "train.log", threads)
        except ReproduceError:
            client.set_terminated(r.run_id, status="FAILED")
            raise
        child = reruns[i + 1] if i + 1 < len(reruns) else None
        if child is not None and child.record.source is not None:
            child.source = Path(json.loads((r.out_dir / "train_state.json").read_text())["last_checkpoint"])
            want, got = child.record.source.weights, weights_digest(load_checkpoint(child.source)["model"])
            if want is not None:
                r.weights_identical = got == want
                r.weights = (f"weights at step {child.record.source.step} "
                             + ("bit-identical to" if got == want else f"differ from (sha256 {got[:12]} vs {want[:12]})")
                             + f" those {child.record.label()} started from")
        conclude(client, r, r.stop[0], opts.rtol)
        client.set_terminated(r.run_id, status="FINISHED")


def reproduce(client: Any, ref: str, opts: Options, here: GitState, allow_other_commit: bool, say: Say) -> list[Rerun]:
    """Rerun ``ref`` (a run id or models:/NAME@ALIAS) and the runs it started from; oldest first."""
    from ttsops.reproduce.record import resolve_ref

    target = read_record(client, resolve_ref(client, ref))
    reruns = plan(client, parent_chain(client, target, opts.parent), opts, here, allow_other_commit)
    for r in reruns:
        for w in r.warnings:
            say(f"warning: {r.record.label()}: {w}")
    execute(client, reruns, opts, say)
    atomic_write_json(opts.out / "report.json", [r.summary() for r in reruns])
    return reruns
