"""Typed configuration for ``smart_tuner_config_v2.yaml`` (SPEC §5) and ``configs/demo.yaml``.

``load_config(path, overrides)`` reads YAML, applies dotted ``key=value`` overrides
(OmegaConf style: ``optimization.sampler=cma_es``), resolves ``${VAR}`` and ``${oc.env:VAR}``
from the environment, and validates with pydantic. Any problem is one ConfigError line that names
the file and the key, e.g. ``configs/demo.yaml: optimization.samplr: unknown key (valid: sampler,
pruner, tpe, hyperband, seed)``.

Each section is its own model, so a component receives only its own part (``TpeConfig``,
``AlertsConfig``), never the whole tree.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from ttsops.errors import ConfigError
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
    epochs_per_generation: int = Field(8, ge=1)  # resource cap of one generation (Hyperband max)


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
            raise ValueError(
                f"min_resource ({self.min_resource}) must not exceed max_resource ({self.max_resource})"
            )
        return self


class OptimizationConfig(_Section):
    sampler: Sampler = Sampler.tpe
    pruner: Pruner = Pruner.hyperband
    tpe: TpeConfig = TpeConfig()
    hyperband: HyperbandConfig = HyperbandConfig()
    seed: int | None = 0


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
    # None = embedded store: sqlite:///<work dir>/mlflow.db with artifacts beside it (no server needed).
    # SPEC's "http://localhost:5000" is what a team with an `mlflow server` sets here.
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

    command: list[str] = [
        "{python}", "-m", "ttsops.train", "-o", "{output_dir}", "-l", "{log_dir}",
        "--config", "{config}", "--tracking_uri", "{tracking_uri}", "--run_id", "{run_id}",
    ]
    hparams_style: Literal["hparams_flag", "cli_flags", "env_json"] = "hparams_flag"
    hparams_flag: str = "--hparams"
    checkpoint_flag: str = "--checkpoint_path"
    warm_start_flag: str | None = "--warm_start"
    checkpoint_glob: str = "checkpoint_*.pt"
    metrics_source: Literal["mlflow", "tensorboard"] = "mlflow"
    metric_map: dict[str, str] = {}  # trainer's name -> ttsops name
    epoch_metric: str = "epoch"
    stop_grace_s: float = Field(60.0, gt=0)  # SIGINT -> SIGTERM
    kill_grace_s: float = Field(10.0, gt=0)  # SIGTERM -> SIGKILL
    no_metrics_timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(1, ge=0)


class PromotionGate(_Section):
    min_attention_alignment_score: float | None = 0.5
    max_val_loss: float | None = None
    min_stoi: float | None = None


class RegistryConfig(_Section):
    model_name: str = "ttsops-tacotron2"
    alias: str = "champion"
    promotion_gate: PromotionGate = PromotionGate()


class TrainConfig(_Section):
    """The part of the config train.py reads: what it trains, on what resources, logging where."""

    training: TrainingConfig = TrainingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    monitoring: MonitoringConfig = MonitoringConfig()


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

    def tracking_uri(self) -> str:
        """The MLflow store: ``monitoring.platforms.mlflow.tracking_uri``, else the embedded
        ``sqlite:///<core_engine.work_dir>/mlflow.db`` (train.py gets the same through the tuner)."""
        return tracking_uri(self.monitoring.platforms.mlflow.tracking_uri, self.core_engine.work_dir)

    def train_config(self) -> TrainConfig:
        """The sections the trainer reads (the same file serves train.py and the tuner)."""
        return TrainConfig(training=self.training, resources=self.resources, monitoring=self.monitoring)


# --- loading -----------------------------------------------------------------------------------
_ENV_REF = re.compile(r"\$\{(?:oc\.env:)?([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")


def _resolve_env(value: Any, key: str, source: str) -> Any:
    """Replace ``${VAR}`` / ``${oc.env:VAR[,default]}`` with the environment's value.

    An unset variable with no default resolves to None when it is the whole value (an optional
    channel stays off), and is an error when embedded in a longer string.
    """
    if isinstance(value, dict):
        return {k: _resolve_env(v, f"{key}.{k}" if key else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _ENV_REF.fullmatch(value)
    if whole:
        return os.environ.get(whole.group(1), whole.group(2))

    def sub(m: re.Match[str]) -> str:
        got = os.environ.get(m.group(1), m.group(2))
        if got is None:
            raise ConfigError(f"{source}: {key}: environment variable {m.group(1)} is not set")
        return got

    return _ENV_REF.sub(sub, value)


def _apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    if not overrides:
        return data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optimization.sampler=tpe)")
    try:
        merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]
    except Exception as e:  # omegaconf raises many types; all mean a malformed override
        raise ConfigError(f"{source}: bad override: {e}".splitlines()[0]) from e


def _format_error(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key{_valid_keys(err['loc'])}"
    return f"{source}: {key}: {err['msg']} (got {err.get('input')!r})"


def _valid_keys(loc: tuple[Any, ...]) -> str:
    model: Any = TunerConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return ""
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return f" (valid: {', '.join(fields)})" if fields else ""


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> TunerConfig:
    try:
        return TunerConfig.model_validate(_resolve_env(data or {}, "", source))
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TunerConfig:
    """Read and validate a config file; ``None`` means all defaults (overrides still apply)."""
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return parse_config(_apply_overrides(data, overrides or [], source), source)


def dump_config(cfg: TunerConfig) -> str:
    """YAML of the resolved config, secrets masked (safe for MLflow artifacts and logs)."""
    data = cfg.model_dump(mode="json")
    alerts = data["monitoring"]["alerts"]
    for k in ("slack_webhook", "webhook_url"):
        if alerts.get(k):
            alerts[k] = "***"
    for sub, k in (("telegram", "bot_token"), ("smtp", "password")):
        if alerts[sub].get(k):
            alerts[sub][k] = "***"
    text: str = yaml.safe_dump(data, sort_keys=False)
    return text
