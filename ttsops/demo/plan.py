"""What the demo is: its size (``DemoPlan``: ``FULL`` for the README's demo, ``QUICK`` for the
end-to-end test), where it writes (``Demo``), and the stage markers that make a re-run resume."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsops.infra.atomic import atomic_write_json
from ttsops.infra.tracking import embedded_tracking_uri

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MARKERS = ".stages"
RESERVE_MIN = 3.5  # registry + samples + evaluate (~1.5 min) + report + the tuner's set-up and stop overshoot
MIN_TUNE_MIN = 3.0

SAMPLE_SENTENCES = (
    "The teacher found a green bottle near the river.",
    "My sister opened the wooden door before breakfast.",
    "Where did she put the blue notebook?",
    "A tired farmer carried a basket of apples at the station.",
)
TINY_CONFIG = REPO / "configs" / "tiny.yaml"  # --quick: the tiny model the tests train
QUICK_HPARAMS = {"max_decoder_steps": 60, "val_fraction": 0.2}  # on top: longer samples, 2-3 val clips


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
    tiny_model: bool = False  # train configs/tiny.yaml's model (plus QUICK_HPARAMS)
    heldout_sentences: int = 20  # per held-out list, for the champion's intelligibility (stage evaluate)


FULL = DemoPlan("full", n_files=15, utterances_per_file=18, samples=SAMPLE_SENTENCES)
QUICK = DemoPlan(
    "quick", n_files=2, utterances_per_file=6, samples=SAMPLE_SENTENCES[:2],
    overrides=(
        "core_engine.n_trials=2", "core_engine.epochs_per_generation=1", "optimization.pruner=none",
        "optimization.hyperband.min_resource=1", "optimization.hyperband.max_resource=1",
        "registry.promotion_gate.min_attention_alignment_score=null",
        "resources.checkpointing.save_frequency_steps=1000",
    ),
    tiny_model=True,
    heldout_sentences=2,
)


def tiny_overrides() -> list[str]:
    """``training.hparams.*`` overrides for configs/tiny.yaml's model (read when a quick demo runs)."""
    from ttsops.config import load_config

    hparams = {**load_config(TINY_CONFIG).training.hparams, **QUICK_HPARAMS}
    return [f"training.hparams.{k}={v}" for k, v in hparams.items()]


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
                f"core_engine.wall_clock_budget_minutes={budget_min:.2f}", *self.plan.overrides,
                *(tiny_overrides() if self.plan.tiny_model else [])]

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


