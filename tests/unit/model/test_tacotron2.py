import copy

import pytest
import torch

from tests.helpers import TINY
from ttsops.audio.mel import MEL_PAD
from ttsops.model.layers import beta_binomial_log_prior, spectral_dropout
from ttsops.model.loss import guided_attention_weights, tacotron2_loss
from ttsops.model.tacotron2 import ModelConfig, Tacotron2
from ttsops.train.hparams import HParams

TINY_HP = HParams().replace(**TINY, variational_dropout=True)  # configs/tiny.yaml's model
R = TINY_HP.n_frames_per_step
STEPS = 7  # decoder steps of the test batch's longest utterance


def batch(b: int = 3, n: int = 12, t: int = STEPS * R, n_mels: int = 80):
    torch.manual_seed(0)
    text_lens = torch.tensor([n, n - 3, n - 5][:b])
    mel_lens = torch.tensor([t, t - 4, t - 6][:b])
    text = torch.randint(2, 30, (b, n)) * (torch.arange(n)[None] < text_lens[:, None])
    mels = torch.randn(b, n_mels, t) * (torch.arange(t)[None, None] < mel_lens[:, None, None])
    return text, text_lens, mels, mel_lens


def test_every_parameter_changes_after_five_steps() -> None:
    torch.manual_seed(0)
    model = Tacotron2(ModelConfig.from_hparams(TINY_HP))
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    text, text_lens, mels, mel_lens = batch()
    for _ in range(5):
        out, post = model(text, text_lens, mels, mel_lens, prior_weight=1.0)
        loss = tacotron2_loss(out.mels, post, out.gates, out.learned_alignments, mels, mel_lens, text_lens, R,
                              5.0, 1.0, 0.2)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p.detach(), before[k])]
    assert unchanged == []


def test_shapes_and_alignment_rows_are_distributions() -> None:
    model = Tacotron2(ModelConfig.from_hparams(TINY_HP)).eval()
    text, text_lens, mels, mel_lens = batch()
    out, post = model(text, text_lens, mels, mel_lens)
    assert out.mels.shape == post.shape == mels.shape
    assert out.gates.shape == (3, STEPS * R) and out.alignments.shape == (3, STEPS, 12)
    steps = torch.div(mel_lens + R - 1, R, rounding_mode="floor")
    computed = torch.arange(STEPS)[None] < steps[:, None]
    assert steps[0] == STEPS and (steps[1:] < STEPS).all()
    # a distribution at each computed step; past a row's last decoder step nothing is computed: zeros
    torch.testing.assert_close(out.alignments.sum(-1), computed.float())
    assert out.alignments[1, :, 9:].max() < 1e-3  # padded tokens get no attention
    frames = torch.arange(STEPS * R)[None] < (steps * R)[:, None]
    assert (out.mels != MEL_PAD).any(1).equal(frames)  # decoder frames past the end: silence for the postnet


def test_prior_pulls_attention_onto_the_diagonal() -> None:
    model = Tacotron2(ModelConfig.from_hparams(TINY_HP)).eval()
    text, text_lens, mels, mel_lens = batch(b=1)
    out, _ = model(text, text_lens, mels, mel_lens, prior_weight=1.0)
    peaks = out.alignments[0].argmax(-1)
    assert (peaks.diff() >= 0).all() and peaks[0] <= 1 and peaks[-1] >= 9
    assert not torch.allclose(out.alignments, out.learned_alignments)


def test_beta_binomial_prior_rows_sum_to_one() -> None:
    lp = beta_binomial_log_prior(torch.tensor([7, 4]), torch.tensor([10, 6]), 7, 10, 1.0)
    torch.testing.assert_close(lp[0].exp().sum(-1), torch.ones(10), atol=1e-4, rtol=0)
    torch.testing.assert_close(lp[1, :6, :4].exp().sum(-1), torch.ones(6), atol=1e-4, rtol=0)
    assert lp[0, 0].argmax() == 0 and lp[0, -1].argmax() == 6


def test_guided_attention_weights_zero_on_the_diagonal() -> None:
    w = guided_attention_weights(torch.tensor([10]), torch.tensor([10]), 10, 10, 0.2)
    assert torch.diagonal(w[0]).max() < 1e-6 and w[0, 0, 9] > 0.6


def test_inference_stops_and_checkpointing_matches() -> None:
    cfg = ModelConfig.from_hparams(TINY_HP, gradient_checkpointing=True)
    model = Tacotron2(cfg).eval()
    text, text_lens, _, _ = batch(b=2)
    mel, align, lengths = model.infer(text[:2], text_lens[:2])
    assert mel.shape[1] == 80 and mel.shape[2] <= TINY_HP.max_decoder_steps * R and lengths.max() <= mel.shape[2]
    torch.manual_seed(0)
    train_model = Tacotron2(cfg).train()
    text, text_lens, mels, mel_lens = batch()
    out, post = train_model(text, text_lens, mels, mel_lens)
    post.sum().backward()  # checkpointed encoder/postnet still back-propagate
    assert train_model.embedding.weight.grad is not None


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_spectral_dropout(p: float) -> None:
    mels = torch.randn(4, 80, 50)
    out = spectral_dropout(mels, p, 8, torch.Generator().manual_seed(0))
    assert torch.equal(out, mels) == (p == 0.0)
