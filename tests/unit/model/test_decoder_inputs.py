"""Frame dropout, the mean frame, no-feedback decoding and the context-mel auxiliary loss."""

import pytest
import torch

from tests.unit.model.test_tacotron2 import TINY_HP as TINY
from tests.unit.model.test_tacotron2 import batch
from ttsops.model.layers import drop_frames, masked_mean_frame
from ttsops.model.loss import tacotron2_loss
from ttsops.model.tacotron2 import ModelConfig, Tacotron2


def test_masked_mean_frame_ignores_padding() -> None:
    mels = torch.zeros(2, 3, 4)
    mels[0, :, :2] = 1.0
    mels[0, :, 2:] = 100.0  # padding of a 2-frame utterance
    mels[1] = 4.0
    mean = masked_mean_frame(mels, torch.tensor([2, 4]))
    torch.testing.assert_close(mean, torch.full((3,), (2 * 1.0 + 4 * 4.0) / 6))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_drop_frames_replaces_about_p_of_the_inputs_by_the_mean(p) -> None:
    torch.manual_seed(0)
    prev, mean = torch.randn(8, 500, 4), torch.full((4,), 7.0)
    out = drop_frames(prev, mean, p)
    dropped = (out == 7.0).all(-1)
    assert dropped.float().mean().item() == pytest.approx(p, abs=0.03)
    torch.testing.assert_close(out[~dropped], prev[~dropped])


def test_training_updates_the_mean_frame_and_a_no_feedback_model_synthesises_from_it() -> None:
    model = Tacotron2(ModelConfig.from_hparams(TINY.replace(drop_frame_rate=1.0))).train()
    text, text_lens, mels, mel_lens = batch()
    assert model.decoder.mean_frame.abs().sum() == 0
    model(text, text_lens, mels, mel_lens)
    torch.testing.assert_close(model.decoder.mean_frame, masked_mean_frame(mels, mel_lens))
    assert not model.decoder.feeds_back
    model.eval()
    mel, _, lengths = model.infer(text[:1], text_lens[:1])
    assert mel.shape[1] == 80 and int(lengths[0]) > 0


def test_a_checkpoint_from_before_the_mean_frame_still_loads() -> None:
    model = Tacotron2(ModelConfig.from_hparams(TINY))
    state = {k: v for k, v in model.state_dict().items() if k != "decoder.mean_frame"}
    Tacotron2(ModelConfig.from_hparams(TINY)).load_state_dict(state)


def test_the_context_mel_head_exists_only_with_its_loss_and_trains() -> None:
    assert Tacotron2(ModelConfig.from_hparams(TINY)).decoder.context_mel is None
    hp = TINY.replace(context_mel_loss_weight=0.5)
    model = Tacotron2(ModelConfig.from_hparams(hp))
    text, text_lens, mels, mel_lens = batch()
    out, post = model(text, text_lens, mels, mel_lens)
    assert out.context_mels is not None and out.context_mels.shape == mels.shape
    plain = tacotron2_loss(out.mels, post, out.gates, out.learned_alignments, mels, mel_lens, text_lens, 2, 5.0, 0.0, 0.2)
    aux = tacotron2_loss(out.mels, post, out.gates, out.learned_alignments, mels, mel_lens, text_lens, 2, 5.0, 0.0, 0.2,
                         out.context_mels, 0.5)
    assert aux.context_mel is not None and aux.context_mel > 0
    torch.testing.assert_close(aux.total, plain.total + 0.5 * aux.context_mel)
    assert aux.val == plain.val  # val_loss never includes the training aids
    aux.total.backward()
    assert model.decoder.context_mel.weight.grad.abs().sum() > 0
