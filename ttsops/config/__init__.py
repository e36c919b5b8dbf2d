"""Typed configuration for ``smart_tuner_config_v2.yaml`` (SPEC §5) and ``configs/demo.yaml``.

``load_config(path, overrides)`` reads YAML, applies dotted ``key=value`` overrides
(OmegaConf style: ``optimization.sampler=cma_es``), resolves ``${VAR}`` and ``${oc.env:VAR}``
from the environment, and validates with pydantic. Any problem is one ConfigError line that names
the file and the key, e.g. ``configs/demo.yaml: optimization.samplr: unknown key (valid: sampler,
pruner, tpe, hyperband, seed)``.

Each section is its own model, so a component receives only its own part (``TpeConfig``,
``AlertsConfig``), never the whole tree. The sections are schema.py; reading and writing, loading.py.
"""

from ttsops.config.loading import dump_config, load_config, parse_config
from ttsops.config.schema import (
    DEFAULT_STAGES,
    AdapterConfig,
    AdaptivePatienceConfig,
    AlertsConfig,
    AttentionMonitoringConfig,
    CheckpointingConfig,
    CoreEngineConfig,
    EnsembleWeights,
    HyperbandConfig,
    MlflowConfig,
    MonitoringConfig,
    OptimizationConfig,
    ParamSpec,
    PlatformsConfig,
    PromotionGate,
    Pruner,
    RayTuneConfig,
    RegistryConfig,
    ResourcesConfig,
    Sampler,
    SmartEarlyStoppingConfig,
    SmtpConfig,
    StageConfig,
    StageName,
    TelegramConfig,
    TensorboardConfig,
    TpeConfig,
    TrainConfig,
    TrainingConfig,
    TunerConfig,
    WandbConfig,
)

__all__ = [
    "AdapterConfig",
    "AdaptivePatienceConfig",
    "AlertsConfig",
    "AttentionMonitoringConfig",
    "CheckpointingConfig",
    "CoreEngineConfig",
    "DEFAULT_STAGES",
    "EnsembleWeights",
    "HyperbandConfig",
    "MlflowConfig",
    "MonitoringConfig",
    "OptimizationConfig",
    "ParamSpec",
    "PlatformsConfig",
    "PromotionGate",
    "Pruner",
    "RayTuneConfig",
    "RegistryConfig",
    "ResourcesConfig",
    "Sampler",
    "SmartEarlyStoppingConfig",
    "SmtpConfig",
    "StageConfig",
    "StageName",
    "TelegramConfig",
    "TensorboardConfig",
    "TpeConfig",
    "TrainConfig",
    "TrainingConfig",
    "TunerConfig",
    "WandbConfig",
    "dump_config",
    "load_config",
    "parse_config",
]
