import pytest

from ttsops.train.validate import Cadence


@pytest.mark.parametrize(
    ("n", "audio_every", "intel_every", "last", "audio", "intel"),
    [
        (1, 1, 0, False, True, False),  # ASR at the last validation only
        (7, 4, 0, True, True, True),
        (7, 4, -1, True, True, False),  # -1: never
        (1, 4, 2, False, True, False),  # a process's first validation has the audio metrics
        (3, 4, 2, False, False, False),
        (2, 4, 2, False, False, True),
        (4, 4, 2, False, True, True),
        (5, 4, -1, True, True, False),  # the last validation of a run is complete, ASR still off
        (5, 4, 3, True, True, True),
        (3, 0, 3, False, True, True),  # audio_every 0 behaves like 1
    ],
)
def test_cadence(n, audio_every, intel_every, last, audio, intel) -> None:
    assert Cadence.of(n, audio_every, intel_every, last) == Cadence(audio, intel)
