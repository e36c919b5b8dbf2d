"""When to stop (SPEC §4; SPEC §3's EarlyStopController): pure detectors over learning curves, their
weighted vote, and the controller that decides inside a generation and across the study.

* ``detectors.py``  the result types, patience and curriculum patience, divergence, learning-rate annealing;
* ``stats.py``      CUSUM, Mann-Kendall + Sen's slope, training progress;
* ``forecast.py``   the Gaussian-process convergence forecast;
* ``attention.py``  alignment health (formed, collapsed, held);
* ``vote.py``       the weighted vote and ``Decision``; ``DetectorParams``;
* ``controller.py`` ``EarlyStopController``.

Everything here but the controller is pure: arrays in, a result with a reason out; no I/O, no
clocks.
"""

from ttsops.smart_tuner.early_stop.controller import EarlyStopController
from ttsops.smart_tuner.early_stop.vote import Decision, DetectorParams

__all__ = ["Decision", "DetectorParams", "EarlyStopController"]
