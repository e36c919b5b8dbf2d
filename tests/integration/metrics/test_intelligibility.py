"""The intelligibility metric with the real ASR (pocketsphinx) and real flite references."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ttsops.audio.mel import MelConfig, MelExtractor
from ttsops.audio.vocoder import GriffinLim
from ttsops.data.corpus import generate_sentences
from ttsops.errors import DataError
from ttsops.metrics import intelligibility as intel

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite missing: run scripts/setup.sh")
SENTENCES = intel.load_heldout("in_domain")[:4]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return intel.flite_references(SENTENCES, tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def asr():
    return intel.pocketsphinx_asr()


def reference_duration(refs):
    return lambda text: len(refs[text][0]) / refs[text][1]


def test_the_recordings_score_low_and_so_does_their_copy_synthesis(refs, asr) -> None:
    mel = MelExtractor(MelConfig())
    vocoder = GriffinLim(MelConfig())
    score = intel.score_set("in_domain", SENTENCES, lambda t: (*refs[t], True), asr, reference_duration(refs), refs,
                            lambda wav, sr: vocoder(mel(wav).numpy()))
    assert score.wer <= 0.3, score.utterances
    assert score.ceiling_wer is not None and score.ceiling_wer <= 0.35
    assert score.speaking_rate_ratio == pytest.approx(1.0)
    assert score.stop_rate == 1.0


def test_noise_scores_near_one_and_a_slow_voice_shows_in_the_rate(refs, asr) -> None:
    rng = np.random.default_rng(0)

    def noise(text):
        wav, sr = refs[text]
        return rng.normal(0, 0.1, int(1.5 * len(wav))).astype(np.float32), sr, False

    score = intel.score_set("in_domain", SENTENCES, noise, asr, reference_duration(refs))
    assert score.wer >= 0.9
    assert score.speaking_rate_ratio == pytest.approx(1.5, rel=0.01)
    assert score.stop_rate == 0.0 and score.ceiling_wer is None
    metrics = intel.summary_metrics({"in_domain": score})
    assert metrics["asr_wer"] == score.wer and metrics["speaking_rate_ratio"] == score.speaking_rate_ratio


def test_the_shipped_lists_are_held_out_from_the_demo_corpus() -> None:
    for name in intel.HELDOUT_SETS:
        assert len(intel.load_heldout(name)) == 20
        intel.check_heldout(intel.load_heldout(name), generate_sentences(3000, seed=0))


def test_a_training_sentence_is_refused() -> None:
    training = ["Some other sentence.", "the QUIET student bought the village church"]
    with pytest.raises(DataError, match="'The quiet student bought the village church.' is in the training set"):
        intel.check_heldout(intel.load_heldout("in_domain"), training)


def test_an_unknown_list_is_one_clear_error() -> None:
    with pytest.raises(DataError, match="unknown held-out list 'ood'"):
        intel.load_heldout("ood")
