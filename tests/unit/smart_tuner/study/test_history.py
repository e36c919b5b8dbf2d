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


def test_the_study_level_reads_only_completed_generations_when_asked():
    trials = [trial(2.0), trial(None, state=TrialState.PRUNED), trial(None, state=TrialState.FAIL), trial(1.5)]
    for i, t in enumerate(trials):
        t.number = i
    assert len(history.generation_objectives(trials)[0]) == 4
    values, align = history.generation_objectives(trials, completed_only=True)
    assert values == [2.0, 1.5] and len(align) == 2
