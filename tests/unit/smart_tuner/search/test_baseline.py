"""The study's first trial runs the config's own hparams (search/baseline.py), on a real study."""

from __future__ import annotations

from optuna.trial import TrialState

from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.smart_tuner.search.baseline import BASELINE_ATTR, baseline_params
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine

SPACE = {
    "learning_rate": ParamSpec(type="loguniform", low=3e-4, high=3e-3),
    "dropout_decoder": ParamSpec(type="uniform", low=0.0, high=0.3),
    "n_layers": ParamSpec(type="int", low=1, high=4),
    "batch_size": ParamSpec(type="choice", choices=[12, 16, 24]),
    "mel_fmax": ParamSpec(type="choice", choices=[7600, 8000, None]),
}
DEFAULTS = {"dropout_decoder": 0.1, "n_layers": 2, "mel_fmax": None, "batch_size": 32}


def test_config_values_first_then_trainer_defaults_and_what_is_left_is_named():
    params, left = baseline_params(SPACE, {"learning_rate": 1e-3, "n_layers": 2.5, "mel_fmax": None}, DEFAULTS.get)
    assert params == {"learning_rate": 1e-3, "dropout_decoder": 0.1, "mel_fmax": None}
    assert set(left) == {"n_layers", "batch_size"}
    assert "not whole" in left["n_layers"] and "not among" in left["batch_size"]
    params, left = baseline_params(SPACE, {"learning_rate": 1e-2, "batch_size": 16}, lambda k: None)
    assert params == {"batch_size": 16}
    assert "outside [0.0003, 0.003]" in left["learning_rate"] and "no value" in left["dropout_decoder"]
    assert "no value" in left["mel_fmax"]  # a trainer's None is "no default known", not the None choice
    assert "7600" in baseline_params(SPACE, {"mel_fmax": "high"}, lambda k: None)[1]["mel_fmax"]


def test_a_new_study_runs_the_baseline_first_and_a_resumed_one_enqueues_nothing(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    c = OptimizationConfig(sampler="tpe", pruner="none", seed=1)
    eng = OptimizationEngine(c, SPACE, storage=storage, study_name="b")
    base = {"learning_rate": 1e-3, "batch_size": 16}
    assert eng.enqueue_baseline(base)
    first = eng.ask()
    assert {k: first.params[k] for k in base} == base and first.user_attrs[BASELINE_ATTR] is True
    eng.tell(first, 1.0, TrialState.COMPLETE)
    again = OptimizationEngine(c, SPACE, storage=storage, study_name="b")
    assert not again.enqueue_baseline(base)
    second = again.ask()
    assert BASELINE_ATTR not in second.user_attrs
    assert not eng.enqueue_baseline({})
