"""Where train.py's metrics, images, audio and params go: MLflow, TensorBoard, optionally W&B.

Images come from ``ttsops.infra.plotting``; the store and the experiment from
``ttsops.infra.tracking``. Uses ``MlflowClient`` with an explicit run id, never MLflow's fluent global state (several runs may
live in one process in tests). When the tuner starts train.py it creates the child run and passes
its id (``--run_id`` or ``MLFLOW_RUN_ID``); train.py then logs into it and leaves closing it to the
tuner. Otherwise train.py creates (and finishes) its own run.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ttsops.infra.tracking import Tag, artifact_root, get_or_create_experiment

logger = logging.getLogger(__name__)


class Tracker:
    """Fan-out of one run's records to every enabled sink. Only rank 0 creates one."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str | None, log_dir: Path,
                 samples_dir: Path, tensorboard: bool = True, wandb_cfg: Any = None,
                 run_name: str | None = None, resume_run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.owns_run = run_id is None
        if run_id is None and resume_run_id is not None and self._exists(resume_run_id):
            run_id = resume_run_id  # an exact resume continues the run it interrupted: one curve
            self.client.update_run(run_id, status="RUNNING")
        if run_id is None:
            exp_id = get_or_create_experiment(self.client, experiment, artifact_root(tracking_uri))
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self.run_id = run_id
        self.samples_dir = samples_dir
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(log_dir))
        self.wandb = None
        if wandb_cfg is not None and wandb_cfg.enabled:
            tags = self.client.get_run(run_id).data.tags
            self.wandb = _start_wandb(wandb_cfg, run_id, log_dir.parent, tags.get(Tag.STUDY), tags.get(Tag.TRIAL))

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in finite.items()])
        if self.tb is not None:
            for k, v in finite.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(finite, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        logged = self.client.get_run(self.run_id).data.params
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(v)[:6000]}
        if changed:  # MLflow params are immutable: a resumed run with new values records them as a tag
            logger.warning("hparams changed on resume (kept as tag resumed_hparams): %s", changed)
            self.client.set_tag(self.run_id, Tag.RESUMED_HPARAMS, str(changed)[:5000])
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in logged]
        try:
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        except MlflowException as e:
            logger.warning("could not log params: %s", str(e).splitlines()[0])
        if self.wandb is not None:
            self.wandb.config.update(params, allow_val_change=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_samples(self, step: int, name: str, png_alignment: bytes, png_mel: bytes,
                    wav: np.ndarray | None, sample_rate: int) -> None:
        from ttsops.audio.io import save_wav

        d = self.samples_dir / f"step_{step:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}_alignment.png").write_bytes(png_alignment)
        (d / f"{name}_mel.png").write_bytes(png_mel)
        if wav is not None:
            save_wav(d / f"{name}.wav", wav, sample_rate)
        self.client.log_artifacts(self.run_id, str(d), f"samples/step_{step:08d}")
        if self.tb is not None:
            from PIL import Image

            for tag, png in ((f"alignment/{name}", png_alignment), (f"mel/{name}", png_mel)):
                img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                self.tb.add_image(tag, img, step, dataformats="HWC")
            if wav is not None:
                self.tb.add_audio(f"audio/{name}", wav[None], step, sample_rate=sample_rate)
            self.tb.flush()
        if self.wandb is not None:
            _wandb_samples(self.wandb, step, name, d, wav, sample_rate)

    def close(self, status: str = "FINISHED") -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.owns_run:
            self.client.set_terminated(self.run_id, status=status)


def _wandb_samples(run: Any, step: int, name: str, d: Path, wav: np.ndarray | None, sample_rate: int) -> None:
    """The same images and audio as TensorBoard's, as W&B media under the same keys."""
    import wandb

    media: dict[str, Any] = {f"alignment/{name}": wandb.Image(str(d / f"{name}_alignment.png")),
                             f"mel/{name}": wandb.Image(str(d / f"{name}_mel.png"))}
    if wav is not None:
        media[f"audio/{name}"] = wandb.Audio(np.asarray(wav, dtype=np.float32), sample_rate=sample_rate)
    run.log(media, step=step)


def _start_wandb(cfg: Any, run_id: str, directory: Path, study: str | None = None, trial: str | None = None):
    """One W&B run per MLflow run (same id). A tuner generation's run joins the W&B group named after
    its study (job type ``generation``, named ``<study>/gen <trial>``), so a study reads as one group."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("W&B logging is enabled but wandb is not installed: pip install 'ttsops[wandb]'") from e
    os.environ.setdefault("WANDB_SILENT", "true")
    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, id=run_id, resume="allow",
                      reinit="finish_previous", dir=str(directory), group=study,
                      job_type="generation" if study else None, name=f"{study}/gen {trial}" if study else None)
