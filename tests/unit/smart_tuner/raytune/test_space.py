"""The search space in Ray's terms: OptunaSearch draws what the Optuna engine draws, PBT's domains
have the same ranges, and its explore step stays inside them."""

from __future__ import annotations

import pickle

import optuna
import pytest

pytest.importorskip("ray", reason="Ray Tune is the optional extra ttsops[ray] (scripts/setup.sh installs it)")

from ray import tune  # noqa: E402

from ttsops.config import ParamSpec  # noqa: E402
from ttsops.smart_tuner.raytune.space import ClipToSpace, DefineByRun, tune_domains  # noqa: E402
from ttsops.smart_tuner.raytune.trainable import TrialNames, trial_index  # noqa: E402

SPACE = {
    "learning_rate": ParamSpec(type="loguniform", low=1e-4, high=1e-2),
    "dropout": ParamSpec(type="uniform", low=0.1, high=0.5, step=0.1),
    "batch_size": ParamSpec(type="int", low=8, high=32, step=8),
    "prenet": ParamSpec(type="choice", choices=[64, 128]),
}


def test_define_by_run_samples_the_optuna_engines_distributions():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    DefineByRun(SPACE)(trial)
    d = trial.distributions
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["dropout"] == optuna.distributions.FloatDistribution(0.1, 0.5, step=0.1)
    assert d["batch_size"] == optuna.distributions.IntDistribution(8, 32, step=8)
    assert d["prenet"] == optuna.distributions.CategoricalDistribution([64, 128])
    pickle.dumps(DefineByRun(SPACE))  # Ray pickles its searcher into the experiment state


def test_tune_domains_keep_the_ranges():
    dom = tune_domains(SPACE)
    assert isinstance(dom["learning_rate"], tune.search.sample.Float)
    assert (dom["learning_rate"].lower, dom["learning_rate"].upper) == (1e-4, 1e-2)
    assert dom["prenet"].categories == [64, 128]
    for _ in range(50):
        lr, bs = dom["learning_rate"].sample(), dom["batch_size"].sample()
        assert 1e-4 <= lr <= 1e-2 and bs in (8, 16, 24, 32)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"learning_rate": 0.05}, {"learning_rate": 1e-2}),  # x1.2 past the top: clipped
        ({"learning_rate": 1e-5}, {"learning_rate": 1e-4}),
        ({"dropout": 0.37}, {"dropout": pytest.approx(0.4)}),  # back on its grid
        ({"batch_size": 38.4}, {"batch_size": 32}),
        ({"batch_size": 12.8}, {"batch_size": 16}),
        ({"prenet": 128}, {"prenet": 128}),  # choices are left alone
    ],
)
def test_explore_is_clipped_to_the_space(given, expected):
    assert ClipToSpace(SPACE)(dict(given)) == expected


def test_trial_names_number_trials_in_creation_order_across_copies():
    class T:
        def __init__(self, i):
            self.trial_id = i

    names = TrialNames("study:1")
    copy = pickle.loads(pickle.dumps(names))  # Ray copies the creator per trial
    assert [names(T("a")), copy(T("b")), names(T("a")), copy(T("c"))] == [
        "trial_0000", "trial_0001", "trial_0000", "trial_0002"]
    assert trial_index("trial_0002") == 2 and trial_index("GenerationTrainable_ab12") == -1
