"""train.py: train Tacotron2 under the contract in docs/train_contract.md.

    ttsops train -o runs/demo -l runs/demo/logs --dataset data/demo --config configs/demo.yaml
    python -m ttsops.train ... -c runs/demo/checkpoint_00000400.pt            # exact resume
    python -m ttsops.train ... -c best.pt --warm_start --hparams "encoder_embedding_dim=256"

SIGINT/SIGTERM finish the current step, write a checkpoint atomically and exit 0; a second one: 130.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ttsops.data.dataset import (
    BucketBatchSampler,
    MelDataset,
    collate,
    dataset_fingerprint,
    describe_split,
    load_utterances,
    split,
)
from ttsops.data.versioning import dataset_version
from ttsops.errors import CheckpointError
from ttsops.infra.atomic import atomic_write_json
from ttsops.infra.gitinfo import UNKNOWN, git_state
from ttsops.infra.tracking import Tag
from ttsops.model.checkpoint import load_checkpoint
from ttsops.model.inference import Synthesizer
from ttsops.text.frontend import text_frontend
from ttsops.train.checkpoint import STATE, CheckpointManager, carry_optimizer_state, warm_start
from ttsops.train.distributed import (
    DistInfo,
    any_rank,
    init_distributed,
    resolve_device,
    shutdown,
    verify_replicas,
)
from ttsops.train.reproducibility import apply_determinism, record_tags, seed_everything, weights_digest
from ttsops.train.setup import RunSetup, resolve_setup
from ttsops.train.tracking import Tracker
from ttsops.train.trainer import Trainer
from ttsops.train.validate import Cadence, log_samples, validate

logger = logging.getLogger("ttsops.train")


class StopFlag:
    """First SIGINT/SIGTERM asks for a graceful stop; the second exits at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        if self.event.is_set():
            os._exit(130)
        self.signal = signum
        self.event.set()
        logger.info("received %s: stopping after this step", signal.Signals(signum).name)

    @property
    def requested(self) -> bool:
        return self.event.is_set()


class StartupClock:
    """What a (re)start costs before the first training step, phase by phase (a tuner restart pays it
    every generation): the interpreter and imports up to main() (from the process's start time, on
    Linux), then each named phase. Logged once, as `startup_<phase>_s` metrics and one log line."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        age = process_age()
        if age is not None:
            self.phases["imports"] = age
        self.mark = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase], self.mark = self.phases.get(phase, 0.0) + now - self.mark, now

    def metrics(self) -> dict[str, float]:
        return {f"startup_{k}_s": v for k, v in self.phases.items()} | {"startup_s": sum(self.phases.values())}

    def line(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items()) + f": {sum(self.phases.values()):.1f} s"


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22 of proc(5)
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def build_data(s: RunSetup, dist: DistInfo) -> tuple[MelDataset, MelDataset, BucketBatchSampler]:
    hp = s.hp
    utts = load_utterances(s.dataset, hp.min_wav_seconds, hp.max_wav_seconds)
    train_u, val_u = split(utts, hp.val_fraction)
    cache = s.dataset / ".mel_cache"
    frontend = text_frontend(hp.text_frontend, cache / "phonemes.json")
    train_set = MelDataset(train_u, hp.mel, cache, progress=dist.is_main, frontend=frontend)
    val_set = MelDataset(val_u, hp.mel, cache, frontend=frontend)
    sampler = BucketBatchSampler([train_set.frames(i) for i in range(len(train_set))], hp.batch_size, hp.seed,
                                 dist.rank, dist.world_size)
    logger.info("data: %d train, %d val clips, %d batches/epoch", len(train_set), len(val_set), len(sampler))
    return train_set, val_set, sampler


def restore(trainer: Trainer, s: RunSetup) -> str | None:
    """Load the checkpoint; returns the MLflow run id it was logging to (exact resume only)."""
    if s.checkpoint is None:
        return None
    state = load_checkpoint(s.checkpoint, trainer.device)
    source = {Tag.SOURCE_RUN: str(state.get("mlflow_run_id") or UNKNOWN), Tag.SOURCE_STEP: str(int(state.get("step", 0))),
              Tag.SOURCE_WEIGHTS: weights_digest(state["model"])}  # what ttsops reproduce restores first
    if s.warm_start:
        skipped = warm_start(trainer.model, state["model"])
        carried = not skipped and s.hp.warm_start_optimizer and carry_optimizer_state(trainer.opt, state.get("optimizer"))
        trainer.progress.step = int(state.get("step", 0))
        trainer.progress.epoch_offset = float(state.get("global_epoch", state.get("epoch")) or 0)  # curriculum goes on
        trainer.progress.validations = 0 if skipped else int(state.get("validations", 0))  # the same weights' cadence
        seed_everything(s.hp.seed + trainer.progress.step)  # new dropout noise, not its source's again (reproducibility.py)
        logger.info("warm start from %s at step %d; skipped %d tensors%s; %s", s.checkpoint, trainer.progress.step, len(skipped),
                    (": " + ", ".join(skipped)) if skipped else "", "optimizer moments carried" if carried else "fresh optimizer")
        trainer.progress.extra.update(warm_start_skipped=skipped, source=source)
        return None
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:  # another architecture, or not a full checkpoint
        detail = "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:400]
        raise CheckpointError(f"{s.checkpoint}: cannot resume it exactly (--warm_start loads the tensors "
                              f"that fit): {type(e).__name__}: {detail}") from None
    trainer.progress.extra["source"] = source
    logger.info("resumed %s at step %d, epoch %d", s.checkpoint, trainer.progress.step, trainer.progress.epoch)
    return state.get("mlflow_run_id")


def start_tracking(s: RunSetup, trainer: Trainer, resumed_run_id: str | None, run_tags: dict[str, str]) -> Tracker:
    """The run's params, config and tags: code, data, and ``run_tags`` (seeds, threads, device, ...).
    How the run started (fresh, warm start or resume of another run's checkpoint, and from what) is
    kept from its first process: an exact resume into the same run records what it changed instead."""
    cfg = s.cfg.monitoring.platforms
    tracker = Tracker(s.tracking_uri, s.experiment, s.run_id, s.log_dir, s.out_dir / "samples",
                      cfg.tensorboard.enabled, cfg.wandb, s.run_name, resume_run_id=resumed_run_id)
    tracker.log_params(trainer.hp.to_dict())
    git = git_state(Path(__file__))
    tags = {Tag.GIT_COMMIT: git.commit or UNKNOWN, Tag.GIT_DIRTY: git.dirty_tag(), Tag.DATASET: str(s.dataset.resolve()),
            Tag.DATASET_FINGERPRINT: dataset_fingerprint(s.dataset),
            Tag.DATASET_VERSION: dataset_version(s.dataset) or "unversioned", **run_tags}
    source = trainer.progress.extra.get("source", {})
    logged = tracker.client.get_run(tracker.run_id).data.tags
    if source.get(Tag.SOURCE_RUN) == tracker.run_id and not s.warm_start and Tag.TRAIN_RESTART_MODE in logged:
        changed = [f"{k}: {logged[k]} -> {v}" for k, v in tags.items() if k != Tag.DATASET and logged.get(k, v) != v]
        tags[Tag.RESUMED_WITH] = "; ".join(changed)[:5000]
        if changed:
            logger.warning("resumed with other settings than the run started with: %s", tags[Tag.RESUMED_WITH])
    else:
        tags.update({Tag.TRAIN_WARM_START_SOURCE: str(s.checkpoint) if s.checkpoint else "none",
                     Tag.WARM_START_SKIPPED: "; ".join(trainer.progress.extra.get("warm_start_skipped", []))[:5000],
                     Tag.TRAIN_RESTART_MODE: "warm_start" if s.warm_start else ("resume" if s.checkpoint else "fresh"),
                     **source})
    tracker.set_tags(tags)
    tracker.log_text(s.config_yaml, "config.yaml")
    return tracker


class Run:
    """Ties trainer, data, checkpoints, tracking and the stop flag together for one process."""

    def __init__(self, s: RunSetup, trainer: Trainer, dist: DistInfo, stop: StopFlag,
                 resumed_run_id: str | None = None, clock: StartupClock | None = None) -> None:
        self.s, self.trainer, self.dist, self.stop = s, trainer, dist, stop
        clock = clock or StartupClock()
        self.clock: StartupClock | None = clock  # None once the first step has logged it
        ck = s.cfg.resources.checkpointing
        self.train_set, self.val_set, self.sampler = build_data(s, dist)  # unusable data: nothing written yet
        self.sampler.seed += round(trainer.progress.epoch_offset * 1000)  # a warm start's own data order
        clock.done("data")
        self.ckpts = CheckpointManager(s.out_dir, ck.keep_n_checkpoints)  # creates the output directory
        self.save_every = ck.save_frequency_steps
        run_tags = record_tags(trainer.hp.seed, self.sampler.describe(),
                               describe_split(self.train_set.utts, self.val_set.utts, trainer.hp.val_fraction),
                               trainer.device, s.cfg.resources.deterministic, dist.world_size)
        self.tracker = start_tracking(s, trainer, resumed_run_id, run_tags) if dist.is_main else None
        clock.done("tracking")
        self.config_yaml = s.config_yaml
        self.last_ckpt: Path | None = None
        self.last_validated = -1  # global step of the latest validation
        self.probe: Any = None  # the intelligibility probe, made at its first use (it loads the ASR)

    def write_state(self, status: str) -> None:
        if not self.dist.is_main:
            return
        p = self.trainer.progress
        atomic_write_json(self.s.out_dir / STATE, {
            "step": p.step, "epoch": p.epoch, "global_epoch": self.global_epoch(),
            "best_val_loss": None if math.isinf(p.best_val_loss) else p.best_val_loss,
            "best_checkpoint": str(self.ckpts.best) if self.ckpts.best else None,
            "last_checkpoint": str(self.last_ckpt) if self.last_ckpt else None, "status": status,
            "mlflow_run_id": self.tracker.run_id if self.tracker else None, "pid": os.getpid(),
            # the signal that stopped it early (the tuner tells a preemption from a finish by it)
            "stop_signal": signal.Signals(self.stop.signal).name if self.stop.signal else None,
        })

    def final_tags(self, status: str) -> dict[str, str]:
        """How the run ended, for ``ttsops reproduce``: where it stopped and the final weights."""
        final = str(self.last_ckpt.resolve()) if self.last_ckpt else ""
        return {Tag.TRAIN_STATUS: status, Tag.FINAL_STEP: str(self.trainer.progress.step), Tag.FINAL_CHECKPOINT: final,
                Tag.FINAL_WEIGHTS: weights_digest(self.trainer.model.state_dict()) if final and status != "failed" else ""}

    def at_max_steps(self, epoch_end: bool = False) -> bool:
        """``--max_steps`` reached; with ``--validate_at_max_steps`` a step that ends an epoch stops
        after that epoch's validation (``loop`` checks again there)."""
        m = self.s.max_steps
        if not m or self.trainer.progress.step < m:
            return False
        return not (epoch_end and self.s.validate_at_max_steps)

    def epoch_fraction(self) -> float:  # of the current epoch, the share trained (0 at its end)
        return self.trainer.progress.batch_in_epoch / max(1, len(self.sampler))

    def global_epoch(self) -> float:  # + the warm-start sources' epochs: what the tuner's curriculum counts
        return self.trainer.progress.epoch_offset + self.trainer.progress.epoch + self.epoch_fraction()

    def save(self, is_best: bool = False) -> None:
        if self.dist.is_main:
            state = self.trainer.state_dict(self.config_yaml)
            state["global_epoch"] = self.global_epoch()
            state["mlflow_run_id"] = self.tracker.run_id if self.tracker else None
            self.last_ckpt = self.ckpts.save(self.trainer.progress.step, state, is_best)

    def validate_and_log(self, last: bool = False) -> None:
        t, hp = self.trainer, self.trainer.hp
        t.progress.validations += 1
        cadence = Cadence.of(t.progress.validations, hp.audio_metrics_every, hp.intelligibility_every, last)
        metrics, samples = validate(t, self.val_set, hp.batch_size, cadence)
        if cadence.intelligibility and self.dist.is_main:
            metrics.update(self.intelligibility())
        metrics["epoch"] = t.progress.epochs_this_process + self.epoch_fraction()
        metrics["global_epoch"] = self.global_epoch()
        self.last_validated = t.progress.step
        metrics["cpu_minutes"] = t.cpu_minutes
        is_best = metrics["val_loss"] < t.progress.best_val_loss
        if is_best:
            t.progress.best_val_loss = metrics["val_loss"]
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, t.progress.step)
            if cadence.audio:
                log_samples(t, self.tracker, samples, t.progress.step)
        logger.info("validation step %d epoch %d: %s", t.progress.step, t.progress.epoch,
                    ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        self.save(is_best)
        self.write_state("running")

    def intelligibility(self) -> dict[str, float]:
        """ASR word error rate etc. of the held-out lists spoken free-running (ttsops.metrics.intelligibility)."""
        from ttsops.metrics import intelligibility

        t = self.trainer
        if self.probe is None:
            utts = self.train_set.utts
            per_char = sum(u.duration for u in utts) / max(1, sum(len(u.text) for u in utts))
            self.probe = intelligibility.Probe([u.text for u in utts], per_char, t.hp.intelligibility_sentences)
        synth = Synthesizer(t.model, t.hp.mel, device=t.device)
        try:
            return intelligibility.summary_metrics(self.probe(synth.speak))
        finally:
            t.model.train()

    def startup_done(self) -> None:
        """After the first step of this process: log what the start cost."""
        clock, self.clock = self.clock, None
        if clock is None:
            return
        clock.done("first_step")
        logger.info("start-up: %s", clock.line())
        if self.tracker is not None:
            self.tracker.log_metrics(clock.metrics(), self.trainer.progress.step)

    def stop_agreed(self) -> bool:
        """A signal seen by any rank stops all of them at the same step (torchrun forwards SIGINT to
        every worker, but they need not see it between the same two steps)."""
        return any_rank(self.stop.requested, self.dist, self.trainer.device)

    def train_epoch(self, bar, task) -> bool:
        """Train the rest of the current epoch; False when stopped early."""
        t = self.trainer
        self.sampler.set_epoch(t.progress.epoch)
        n_batches = len(self.sampler)
        for i, idx in enumerate(self.sampler):
            if i < t.progress.batch_in_epoch:
                continue  # mid-epoch resume: these batches were trained before the checkpoint
            stats = t.train_step(collate([self.train_set[j] for j in idx], t.hp.n_frames_per_step))
            self.startup_done()
            bar.advance(task)
            if self.tracker is not None and t.progress.step % t.hp.log_every_steps == 0:
                self.tracker.log_metrics(stats, t.progress.step)
                bar.update(task, description=f"step {t.progress.step} loss {stats['train_loss']:.3f}")
            if t.progress.step % self.save_every == 0:
                self.save()
            every = t.hp.val_every_steps
            if every and t.progress.step % every == 0 and i < n_batches - 1:  # an epoch's end: see loop()
                self.validate_and_log()
            if self.stop_agreed() or self.at_max_steps(epoch_end=i == n_batches - 1):
                return False
        t.progress.epoch += 1
        t.progress.epochs_this_process += 1
        t.progress.batch_in_epoch = 0
        return True

    def due(self, last: bool) -> bool:
        """Validate at this epoch's end? Every ``val_every_epochs`` epochs (or on the ``val_every_steps``
        cadence), and after the last epoch; never twice at one step."""
        t, every = self.trainer, self.trainer.hp.val_every_steps
        cadence = t.progress.step % every == 0 if every else t.progress.epochs_this_process % t.hp.val_every_epochs == 0
        return self.last_validated != t.progress.step and (cadence or last)

    def loop(self) -> str:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        hp, t = self.trainer.hp, self.trainer
        epochs_left = max(0, hp.epochs - t.progress.epoch)
        cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*cols, disable=not self.dist.is_main or not sys.stderr.isatty()) as bar:
            task = bar.add_task("training", total=epochs_left * len(self.sampler) - t.progress.batch_in_epoch)
            self.write_state("running")
            while t.progress.epoch < hp.epochs:
                if not self.train_epoch(bar, task):
                    self.save()
                    return "stopped"
                if self.due(t.progress.epoch >= hp.epochs):
                    self.validate_and_log(last=t.progress.epoch >= hp.epochs)
                if self.stop_agreed() or self.at_max_steps():
                    self.save()
                    return "stopped"
        self.save()
        return "finished"


def train(s: RunSetup, stop: StopFlag, clock: StartupClock | None = None) -> int:
    clock = clock or StartupClock()
    if s.cfg.resources.num_threads:
        torch.set_num_threads(s.cfg.resources.num_threads)
    device = resolve_device(s.cfg.resources.device, int(os.environ.get("LOCAL_RANK", "0")))
    apply_determinism(s.cfg.resources.deterministic, device)
    dist = init_distributed(device)
    trainer = Trainer(s.hp, device, dist, s.cfg.resources.mixed_precision, s.cfg.resources.gradient_checkpointing)
    clock.done("model")
    logger.info("device %s%s, %s, %s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "",
                f"autocast {str(trainer.amp_dtype).removeprefix('torch.')}" if trainer.amp_dtype else "fp32",
                f"DDP rank {dist.rank} of {dist.world_size} over {torch.distributed.get_backend()}" if dist.enabled
                else "one process")
    resumed_run_id = restore(trainer, s)
    clock.done("checkpoint")
    run = Run(s, trainer, dist, stop, resumed_run_id, clock)
    status = "failed"
    try:
        started = time.time()
        status = run.loop()
        if dist.enabled:
            sums = verify_replicas(trainer.model, dist)
            logger.info("rank %d: weights identical on all %d ranks (checksums %s)", dist.rank, dist.world_size, sums)
        logger.info("%s at step %d after %.1f min", status, trainer.progress.step, (time.time() - started) / 60)
        return 0
    finally:
        run.write_state(status)
        if run.tracker is not None:
            run.tracker.set_tags(run.final_tags(status))
            run.tracker.close("FINISHED" if status != "failed" else "FAILED")
        shutdown(dist)


def main(argv: list[str] | None = None) -> int:
    stop = StopFlag()
    stop.install()  # before the slow imports and set-up, so an early SIGINT is still graceful
    clock = StartupClock()
    setup = resolve_setup(argv)
    clock.done("config")
    return train(setup, stop, clock)  # the output directory appears once the data is usable
