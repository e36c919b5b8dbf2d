from pathlib import Path

import pytest

from tests.helpers import REPO
from ttsops.config import Sampler, TunerConfig, dump_config, load_config
from ttsops.errors import ConfigError

CONFIGS = REPO / "configs"


@pytest.mark.parametrize("name", ["smart_tuner_config_v2.yaml", "demo.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.core_engine.name == "SmartTunerV2"


def test_spec_defaults() -> None:
    cfg = load_config(CONFIGS / "smart_tuner_config_v2.yaml")
    assert cfg.core_engine.n_trials == 100
    assert cfg.optimization.tpe.n_startup_trials == 15
    assert (cfg.optimization.hyperband.min_resource, cfg.optimization.hyperband.max_resource) == (1, 80)
    assert cfg.search_space["mel_fmax"].choices == [7600, 8000, None]
    assert cfg.smart_early_stopping.ensemble_weights.bayesian_prediction == 0.4
    assert cfg.smart_early_stopping.adaptive_patience.stages["fine_tune"].multiplier == 0.7
    assert cfg.resources.checkpointing.keep_n_checkpoints == 3


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("optimization:\n  samplr: tpe\n", "optimization.samplr: unknown key (valid: sampler, pruner"),
        ("optimization:\n  sampler: annealing\n", "optimization.sampler:"),
        ("core_engine:\n  n_trials: many\n", "core_engine.n_trials:"),
        ("search_space:\n  lr: {type: loguniform, low: 0.1, high: 0.01}\n", "search_space.lr"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, yaml_text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, yaml_text))
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg
    assert "c.yaml" in msg


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_env_references_and_overrides(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK", "https://hooks.example/secret")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    p = _write(tmp_path, "monitoring:\n  alerts:\n    slack_webhook: ${SLACK_WEBHOOK}\n"
                         "    webhook_url: ${oc.env:UNSET_VAR}\n")
    cfg = load_config(p, ["optimization.sampler=cma_es", "core_engine.n_trials=7"])
    assert cfg.monitoring.alerts.slack_webhook == "https://hooks.example/secret"
    assert cfg.monitoring.alerts.webhook_url is None
    assert cfg.optimization.sampler is Sampler.cma_es and cfg.core_engine.n_trials == 7
    assert "secret" not in dump_config(cfg)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(p, ["optimization.sampler"])


def test_embedded_env_reference_must_be_set(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    p = _write(tmp_path, "monitoring:\n  alerts:\n    webhook_url: https://x/${NOPE_TOKEN}/y\n")
    with pytest.raises(ConfigError, match="NOPE_TOKEN is not set"):
        load_config(p)


def test_a_curriculum_stage_is_merged_over_its_default(tmp_path) -> None:
    stages = lambda cfg: {k: (v.epochs, v.multiplier) for k, v in cfg.smart_early_stopping.adaptive_patience.stages.items()}  # noqa: E731
    # a longer warm-up (docs/early_stopping.md) is one key: the multiplier and the other stages stay
    cfg = load_config(None, ["smart_early_stopping.adaptive_patience.stages.warmup.epochs=40"])
    assert stages(cfg) == {"warmup": (40, 1.5), "main": (100, 1.0), "fine_tune": (50, 0.7)}
    f = tmp_path / "c.yaml"
    f.write_text("smart_early_stopping:\n  adaptive_patience:\n    stages:\n      main: {multiplier: 2.0}\n"
                 "      fine_tune: null\n")
    cfg = load_config(f)
    assert stages(cfg) == {"warmup": (20, 1.5), "main": (100, 2.0)}  # null drops a stage
    # the dump the tuner hands to train.py reads back to the same stages (the dropped one included)
    back = tmp_path / "back.yaml"
    back.write_text(dump_config(cfg))
    assert stages(load_config(back)) == stages(cfg)
    with pytest.raises(ConfigError, match="stages.warmup.epochs: Input should be greater than or equal to 1"):
        load_config(None, ["smart_early_stopping.adaptive_patience.stages.warmup.epochs=0"])
    with pytest.raises(ConfigError, match="stages.warmpu"):
        load_config(None, ["smart_early_stopping.adaptive_patience.stages.warmpu.epochs=4"])
    with pytest.raises(ConfigError, match="stages.warmpu"):  # a mistyped stage is named, not ignored
        load_config(None, ["smart_early_stopping.adaptive_patience.stages.warmpu=null"])
    # any dump (not only dump_config's YAML) keeps a dropped stage dropped
    assert stages(TunerConfig.model_validate_json(cfg.model_dump_json())) == stages(cfg)


@pytest.mark.parametrize(
    ("overrides", "epochs"),
    [
        ([], 8),  # spec defaults: 8 <= max_resource 80
        (["core_engine.epochs_per_generation=100"], 80),  # hyperband caps it
        (["core_engine.epochs_per_generation=100", "optimization.pruner=none"], 100),  # no hyperband: no cap
        (["core_engine.epochs_per_generation=100", "optimization.pruner=median", "optimization.sampler=bohb"], 80),
    ],
)
def test_generation_epochs_are_capped_by_hyperband_max_resource(overrides, epochs):
    assert load_config(None, overrides).generation_epochs() == epochs
