"""study_state: what the study level reads back from the trials."""

from __future__ import annotations

import math

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ttsops.smart_tuner.study import history


def trial(value, state=TrialState.COMPLETE, **attrs):
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                        params={"learning_rate": 1e-3},
                        distributions={"learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
                        user_attrs=attrs)


def test_generation_alignment_is_the_held_level_with_a_fallback_for_older_studies():
    trials = [
        trial(1.0, **{history.ALIGNMENT_ATTR: 0.86, history.METRICS_ATTR: {"attention_alignment_score": 0.41}}),
        trial(0.9, **{history.METRICS_ATTR: {"attention_alignment_score": 0.77}}),  # written before the attr
        trial(None, state=TrialState.PRUNED),
    ]
    for i, t in enumerate(trials):
        t.number = i
    values, align = history.generation_objectives(trials)
    assert values[:2] == [1.0, 0.9] and math.isnan(values[2])
    assert align[:2] == [0.86, 0.77] and math.isnan(align[2])
