"""The config's sections as typed pydantic models (``smart_tuner_config_v2.yaml``, SPEC §5, plus
ttsops' ``training``, ``adapter`` and ``registry``). Each section is its own model, so a component
receives only its own part (``TpeConfig``, ``AlertsConfig``), never the whole tree."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from ttsops.infra.tracking import tracking_uri


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- core_engine -------------------------------------------------------------------------------
class CoreEngineConfig(_Section):
    name: str = "SmartTunerV2"
    primary_engine: Literal["optuna", "ray_tune"] = "optuna"
    n_trials: int = Field(100, ge=1)
    resume_from_checkpoint: bool = True
    wall_clock_budget_minutes: float | None = Field(None, gt=0)
    study_name: str = "ttsops"
    storage: str | None = None  # None: sqlite:///<work_dir>/optuna.db
    work_dir: str = "runs/tune"
    # a generation's epoch budget; with Hyperband (pruner hyperband, or sampler bohb) capped by
    # optimization.hyperband.max_resource (TunerConfig.generation_epochs)
    epochs_per_generation: int = Field(8, ge=1)
    # workers on several hosts: each stamps its running trial every heartbeat_s; a RUNNING trial
    # whose stamp is older than stale_after_s (at least 3 heartbeats plus the adapter's stop and
    # kill graces) belongs to a dead worker and is re-queued by any other (study/recovery.py)
    heartbeat_s: float = Field(10.0, gt=0)
    stale_after_s: float = Field(120.0, gt=0)


# --- optimization ------------------------------------------------------------------------------
class Sampler(StrEnum):
    tpe = "tpe"
    cma_es = "cma_es"
    bohb = "bohb"
    random = "random"


class Pruner(StrEnum):
    hyperband = "hyperband"
    median = "median"
    none = "none"


class TpeConfig(_Section):
    n_startup_trials: int = Field(15, ge=0)
    consider_magic_clip: bool = True


class HyperbandConfig(_Section):
    min_resource: int = Field(1, ge=1)
    max_resource: int = Field(80, ge=1)
    reduction_factor: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _min_le_max(self) -> HyperbandConfig:
        if self.min_resource > self.max_resource:
            raise ValueError(f"min_resource ({self.min_resource}) must not exceed max_resource ({self.max_resource})")
        return self


class OptimizationConfig(_Section):
    sampler: Sampler = Sampler.tpe
    pruner: Pruner = Pruner.hyperband
    tpe: TpeConfig = TpeConfig()
    hyperband: HyperbandConfig = HyperbandConfig()
    seed: int | None = 0
    # the study's first trial runs the config's own hparams for the searched keys (search/baseline.py)
    enqueue_baseline: bool = True
    # a warm start is pruned when clearly worse than its line (search/warm_line.py); null: by the pruner
    warm_prune_sigmas: float | None = Field(2.0, gt=0)
    # after this many rejected continuations the head resumes as one run, unjudged (search/line_head.py)
    line_patience: int | None = Field(2, ge=1)
    # what the sampler learns from: each continuation's effect on the line, or its objective (search/line_effect.py)
    sampler_value: Literal["line_effect", "objective"] = "line_effect"


# --- search_space ------------------------------------------------------------------------------
class ParamSpec(_Section):
    """One searched hyperparameter: ``loguniform``/``uniform``/``int`` need low < high,
    ``choice`` needs a non-empty ``choices`` list (``null`` allowed as a choice)."""

    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice":
            if not self.choices:
                raise ValueError("type 'choice' needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"type '{self.type}' needs 'low' and 'high'")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


# --- smart_early_stopping ----------------------------------------------------------------------
class EnsembleWeights(_Section):
    statistical_consensus: float = Field(0.3, ge=0)
    bayesian_prediction: float = Field(0.4, ge=0)
    attention_analysis: float = Field(0.3, ge=0)


class AttentionMonitoringConfig(_Section):
    enabled: bool = True
    alignment_threshold: float = Field(0.8, ge=0, le=1)
    monotonic_penalty: float = Field(0.1, ge=0)


class StageConfig(_Section):
    epochs: int = Field(ge=1)
    multiplier: float = Field(gt=0)


StageName = Literal["warmup", "main", "fine_tune"]
DEFAULT_STAGES: dict[StageName, StageConfig] = {
    "warmup": StageConfig(epochs=20, multiplier=1.5),
    "main": StageConfig(epochs=100, multiplier=1.0),
    "fine_tune": StageConfig(epochs=50, multiplier=0.7),
}


class AdaptivePatienceConfig(_Section):
    enabled: bool = True
    initial_patience: int = Field(5, ge=1)
    max_patience: int = Field(15, ge=1)
    stages: dict[StageName, StageConfig] = dict(DEFAULT_STAGES)

    @field_validator("stages", mode="before")
    @classmethod
    def _merge_stages(cls, value: Any) -> Any:
        """A given stage is merged over its default, key by key (``stages.warmup.epochs=40`` keeps the
        multiplier, and the other stages); a stage set to null is dropped (the rest follow on)."""
        if not isinstance(value, dict):
            return value
        merged: dict[Any, Any] = {k: v.model_dump() for k, v in DEFAULT_STAGES.items()}
        for name, stage in value.items():
            if stage is None and name in merged:
                merged.pop(name)
            elif isinstance(stage, dict) and name in merged:
                merged[name] = {**merged[name], **stage}
            else:
                merged[name] = stage  # unknown stage names and bad values fail validation, by name
        return merged

    @field_serializer("stages", mode="wrap")
    def _dump_dropped_stages(self, stages: Any, handler: Any) -> Any:
        """A dropped default stage is dumped as null, so that every dump reads back the same stages."""
        out = handler(stages)
        return {**dict.fromkeys(DEFAULT_STAGES), **out} if isinstance(out, dict) else out


class SmartEarlyStoppingConfig(_Section):
    enabled: bool = True
    ensemble_weights: EnsembleWeights = EnsembleWeights()
    tuner_patience: int = Field(5, ge=1)
    tuner_min_delta: float = Field(0.005, ge=0)
    attention_monitoring: AttentionMonitoringConfig = AttentionMonitoringConfig()
    adaptive_patience: AdaptivePatienceConfig = AdaptivePatienceConfig()


# --- monitoring --------------------------------------------------------------------------------
class MlflowConfig(_Section):
    # None: embedded sqlite:///<work dir>/mlflow.db (no server); SPEC's "http://localhost:5000" needs an `mlflow server`
    tracking_uri: str | None = None
    experiment_name: str = "ttsops"


class WandbConfig(_Section):
    enabled: bool = False
    project: str = "ttsops"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"


class TensorboardConfig(_Section):
    enabled: bool = True


class PlatformsConfig(_Section):
    mlflow: MlflowConfig = MlflowConfig()
    wandb: WandbConfig = WandbConfig()
    tensorboard: TensorboardConfig = TensorboardConfig()


class TelegramConfig(_Section):
    bot_token: str | None = Field(None, repr=False)  # secret: kept out of repr
    chat_id: str | None = None
    api_base: str = "https://api.telegram.org"


class SmtpConfig(_Section):
    host: str = "localhost"
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, repr=False)  # secret
    sender: str = "ttsops@localhost"
    timeout_s: float = 10.0


class AlertsConfig(_Section):
    slack_webhook: str | None = Field(None, repr=False)  # secret (the URL is the credential)
    email_recipients: list[str] = []
    smtp: SmtpConfig = SmtpConfig()
    telegram: TelegramConfig = TelegramConfig()
    webhook_url: str | None = Field(None, repr=False)  # secret
    min_interval_s: float = Field(1.0, ge=0)  # rate limit per channel
    dedup_window_s: float = Field(300.0, ge=0)
    max_retries: int = Field(3, ge=0)


class MonitoringConfig(_Section):
    platforms: PlatformsConfig = PlatformsConfig()
    alerts: AlertsConfig = AlertsConfig()


# --- resources ---------------------------------------------------------------------------------
class CheckpointingConfig(_Section):
    save_frequency_steps: int = Field(1000, ge=1)
    keep_n_checkpoints: int = Field(3, ge=1)


class ResourcesConfig(_Section):
    mixed_precision: bool = True
    gradient_checkpointing: bool = True
    checkpointing: CheckpointingConfig = CheckpointingConfig()
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int | None = None
    # torch's deterministic algorithms where they exist (warn where none does), cuDNN without
    # autotuning, cuBLAS with a fixed workspace; see docs/train_contract.md, "Reproducibility"
    deterministic: bool = False


# --- training / adapter / registry (ttsops additions) -------------------------------------------
class TrainingConfig(_Section):
    """What train.py trains on and with, when run under this config. ``hparams`` are the trainer's
    own: train.py refuses an unknown name or a wrong type before training, and the tuner asks its
    TrainerAdapter before the first generation (this module knows no trainer)."""

    dataset: str | None = None
    hparams: dict[str, Any] = {}


class AdapterConfig(_Section):
    """How the tuner drives a trainer. ``{python}``, ``{output_dir}``, ``{log_dir}``,
    ``{config}``, ``{dataset}``, ``{run_id}``, ``{tracking_uri}``, ``{generation}``, ``{epochs}``
    are substituted in ``command`` (the run id also reaches any trainer as ``MLFLOW_RUN_ID``)."""

    command: list[str] = Field(min_length=1, default=[
        "{python}", "-m", "ttsops.train", "-o", "{output_dir}", "-l", "{log_dir}",
        "--config", "{config}", "--tracking_uri", "{tracking_uri}", "--run_id", "{run_id}"])
    hparams_style: Literal["hparams_flag", "cli_flags", "env_json"] = "hparams_flag"
    hparams_flag: str = "--hparams"
    checkpoint_flag: str = "--checkpoint_path"
    warm_start_flag: str | None = "--warm_start"
    checkpoint_glob: str = "checkpoint_*.pt"
    # a validation's checkpoint by global step; null: unknown (a generation keeps its last validation)
    step_checkpoint: str | None = "checkpoint_{step:08d}.pt"
    # modules a long-lived fork server imports once, each `{python} -m ...` launch then a fork of it
    # (trainer/fork_server.py); null: train.py's for the default command, none otherwise; []: off
    preload: list[str] | None = None
    metrics_source: Literal["mlflow", "tensorboard"] = "mlflow"
    metric_map: dict[str, str] = {}  # trainer's name -> ttsops name
    epoch_metric: str = "epoch"

    @field_validator("step_checkpoint")
    @classmethod
    def _step_template(cls, t: str | None) -> str | None:
        try:
            ok = t is None or ("{step" in t and "/" not in t.format(step=0))
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{t!r} must name a file in the output directory by {{step}} and nothing else")
        return t

    @field_validator("command")
    @classmethod
    def _program_named(cls, command: list[str]) -> list[str]:
        """The first element is the program: an empty one fails only when the first generation starts."""
        if not command[0].strip():
            raise ValueError("the first element (the program to run) is empty")
        return command
    stop_grace_s: float = Field(60.0, gt=0)  # SIGINT -> SIGTERM
    kill_grace_s: float = Field(10.0, gt=0)  # SIGTERM -> SIGKILL
    no_metrics_timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(1, ge=0)  # crashes (the trainer's own errors) per generation
    # preemptions (killed from outside, or the tuner died) in a row without a validation between
    # them before the generation counts as FAIL; they never use up max_retries nor n_trials
    max_consecutive_preemptions: int = Field(3, ge=0)


class PromotionGate(_Section):
    min_attention_alignment_score: float | None = 0.5
    max_val_loss: float | None = None
    min_stoi: float | None = None
    max_asr_wer: float | None = Field(None, ge=0, le=1)


class RegistryConfig(_Section):
    model_name: str = "ttsops-tacotron2"
    alias: str = "champion"
    promotion_gate: PromotionGate = PromotionGate()


class TrainConfig(_Section):
    """The part of the config train.py reads: what it trains, on what resources, logging where."""

    training: TrainingConfig = TrainingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    monitoring: MonitoringConfig = MonitoringConfig()


class ObjectiveConfig(_Section):
    """Weights of the tuner's composite objective (ttsops/smart_tuner/search/objective.py); the
    alignment threshold is ``smart_early_stopping.attention_monitoring.alignment_threshold``;
    ``val_loss_scale`` divides ``val_loss`` (measured ranges in that module's docstring)."""

    val_loss_scale: float = Field(5.0, gt=0)
    alignment: float = Field(1.0, ge=0)
    mcd: float = Field(0.02, ge=0)
    stoi: float = Field(0.5, ge=0)
    pesq: float = Field(0.1, ge=0)
    asr_wer: float = Field(1.0, ge=0)
    free_running: float = Field(0.0, ge=0)


# --- ray_tune (core_engine.primary_engine: ray_tune) --------------------------------------------
class RayTuneConfig(_Section):
    """Ray Tune as the engine: the same train.py generations, Ray's searcher and scheduler.
    ``asha``: Optuna's TPE through Ray's OptunaSearch, ASHA prunes; ``pbt``: Population Based
    Training, a trial that falls behind exploits a better one's checkpoint (train.py
    ``--warm_start``) and perturbs its hparams. ``address``: None starts an embedded Ray
    (``ray.init()``); ``auto`` or ``ray://host:10001`` joins a running cluster."""

    scheduler: Literal["asha", "pbt"] = "asha"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # embedded Ray only; None: every core
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)  # per trial; None: core_engine.epochs_per_generation
    grace_period: int = Field(1, ge=1)  # ASHA: validations before a trial can be stopped
    reduction_factor: float = Field(3.0, gt=1)  # ASHA
    population: int = Field(4, ge=2)  # PBT: trials run side by side (core_engine.n_trials is for asha)
    perturbation_interval: int = Field(2, ge=1)  # PBT: validations between exploit/explore decisions
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # PBT: bottom share that exploits the top
    resample_probability: float = Field(0.25, ge=0, le=1)  # PBT: explore by resampling, else x1.2 / x0.8
    synch: bool = True  # PBT: decide when the whole population reached the interval (else as each arrives)


class TunerConfig(_Section):
    core_engine: CoreEngineConfig = CoreEngineConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    search_space: dict[str, ParamSpec] = {}
    smart_early_stopping: SmartEarlyStoppingConfig = SmartEarlyStoppingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    resources: ResourcesConfig = ResourcesConfig()
    training: TrainingConfig = TrainingConfig()
    adapter: AdapterConfig = AdapterConfig()
    registry: RegistryConfig = RegistryConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    ray_tune: RayTuneConfig = RayTuneConfig()

    def tracking_uri(self) -> str:
        """The MLflow store: ``monitoring.platforms.mlflow.tracking_uri``, else the embedded
        ``sqlite:///<core_engine.work_dir>/mlflow.db`` (train.py gets the same through the tuner)."""
        return tracking_uri(self.monitoring.platforms.mlflow.tracking_uri, self.core_engine.work_dir)

    def uses_hyperband(self) -> bool:
        """Hyperband prunes: ``optimization.pruner: hyperband``, or ``sampler: bohb`` (TPE + Hyperband,
        Optuna's recipe for BOHB, which forces the hyperband pruner)."""
        return self.optimization.sampler is Sampler.bohb or self.optimization.pruner is Pruner.hyperband

    def generation_epochs(self) -> int:
        """Epochs a generation gets: ``core_engine.epochs_per_generation``, capped by
        ``optimization.hyperband.max_resource`` when Hyperband prunes (its rungs stop there: epochs
        past it are never compared)."""
        n = self.core_engine.epochs_per_generation
        return min(n, self.optimization.hyperband.max_resource) if self.uses_hyperband() else n

    def train_config(self) -> TrainConfig:
        """The sections the trainer reads (the same file serves train.py and the tuner)."""
        return TrainConfig(training=self.training, resources=self.resources, monitoring=self.monitoring)
