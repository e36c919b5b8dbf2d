"""The fused teacher-forced decoder (decoder_loop.DecoderLoop, hand-written backward) against a
straightforward step-by-step autograd reference: the pre-fusion ``Decoder.forward``, a loop over
``Decoder._step`` (the step ``Decoder.infer`` still uses) over every step of every row, whose outputs
past each row's last decoder step are then replaced by zeros, its mel frames by silence (the fused
loop does not compute them).

Tolerance: float64 agrees to 1e-10 (relative to each tensor's largest value; measured ~1e-15), so the
maths is the same; float32 to 1e-4 (measured ~1e-6), the float error of a different summation order.
"""

import pytest
import torch

from tests.unit.model.test_tacotron2 import TINY_HP as TINY
from tests.unit.model.test_tacotron2 import batch
from ttsops.audio.mel import MEL_PAD
from ttsops.model.decoder_loop import DecoderLoop, LoopDims
from ttsops.model.layers import beta_binomial_log_prior
from ttsops.model.loss import tacotron2_loss
from ttsops.model.tacotron2 import DecoderOutput, ModelConfig, Tacotron2


def reference_decoder_forward(dec, memory, text_lens, mels, mel_lens, prior_weight: float = 0.0) -> DecoderOutput:
    """Decoder.forward before the fused loop: autograd through ``_step`` at every decoder step."""
    r, b = dec.cfg.n_frames_per_step, memory.size(0)
    t_dec = mels.size(2) // r
    prev = mels[:, :, r - 1::r][:, :, : t_dec - 1]
    prev = torch.cat([mels.new_zeros(b, mels.size(1), 1), prev], 2).transpose(1, 2)
    prenet_out = dec.prenet(prev)
    processed = dec.attention.memory_layer(memory)
    loc_w = dec.attention.fused_location_weight()
    mask = torch.arange(memory.size(1))[None] < text_lens[:, None]
    prior = None
    if prior_weight > 0:
        steps = torch.div(mel_lens + r - 1, r, rounding_mode="floor")
        prior = beta_binomial_log_prior(
            text_lens, steps, memory.size(1), t_dec, dec.cfg.attention_prior_scaling).exp() * mask[:, None]
    s, (mask_a, mask_d) = dec._init_state(memory), dec._dropout_masks(memory, t_dec)
    outs, used, learned = [], [], []
    for i in range(t_dec):
        masks = (None if mask_a is None else mask_a[i], None if mask_d is None else mask_d[i])
        w, lw = dec._step(s, prenet_out[:, i], memory, processed, mask, loc_w, masks,
                          None if prior is None else (prior[:, i], prior_weight))
        outs.append(torch.cat([s["dh"], s["ctx"]], -1))
        used.append(w)
        learned.append(lw)
    computed = (torch.arange(t_dec)[None] < torch.div(mel_lens + r - 1, r, rounding_mode="floor")[:, None])[..., None]
    h = torch.stack(outs, 1) * computed
    mel_out = dec.projection(h).view(b, t_dec, r, -1).masked_fill(~computed[..., None], MEL_PAD)
    gates = dec.gate(h).reshape(b, t_dec * r)
    return DecoderOutput(mel_out.view(b, t_dec * r, -1).transpose(1, 2), gates, torch.stack(used, 1) * computed,
                         torch.stack(learned, 1) * computed)


def run(model: Tacotron2, reference: bool, dtype: torch.dtype, prior_weight: float, order=(0, 1, 2)):
    text, text_lens, mels, mel_lens = (x[list(order)] for x in batch())
    mels = mels.to(dtype)
    torch.manual_seed(1)  # the same dropout masks in both runs (drawn in the same order)
    memory = model.encode(text, text_lens)
    dec = reference_decoder_forward if reference else type(model.decoder).forward
    out = dec(model.decoder, memory, text_lens, mels, mel_lens, prior_weight)
    post = model._postnet(out.mels)
    loss = tacotron2_loss(out.mels, post, out.gates, out.learned_alignments, mels, mel_lens, text_lens, 2,
                          5.0, 1.0, 0.2)
    model.zero_grad()
    # a term on the used alignments too, so every output of the loop carries a gradient
    (loss.total + (out.alignments * torch.linspace(0, 1, out.alignments.size(-1), dtype=dtype)).sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    outs = [out.mels, out.gates, out.alignments, out.learned_alignments, post, loss.total]
    return [x.detach() for x in outs], grads


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float, what: str) -> None:
    scale = float(b.abs().max()) or 1.0
    err = float((a - b).abs().max()) / scale
    assert err <= rel, f"{what}: max |diff| / max |ref| = {err:.2e} > {rel:.0e}"


@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("prior_weight,variational,train,order", [
    (0.0, True, True, (0, 1, 2)), (0.7, False, True, (0, 1, 2)), (0.5, True, False, (0, 1, 2)),
    (0.7, False, True, (2, 0, 1)),  # rows not longest first: reordered for the loop and back
])
def test_fused_loop_matches_stepwise_autograd(dtype, rel, prior_weight, variational, train, order) -> None:
    cfg = ModelConfig.from_hparams(TINY.replace(variational_dropout=variational))
    torch.manual_seed(0)
    model = Tacotron2(cfg).to(dtype).train(train)
    ref_out, ref_grads = run(model, True, dtype, prior_weight, order)
    out, grads = run(model, False, dtype, prior_weight, order)
    for name, a, b in zip(["mels", "gates", "alignments", "learned", "postnet", "loss"], out, ref_out, strict=True):
        assert_close(a, b, rel, name)
    assert grads.keys() == ref_grads.keys()
    # gradients relative to the largest gradient of the model: some (the conv biases before a
    # batch norm, the attention's v.bias before a softmax) are exactly 0 in exact arithmetic
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for k in ref_grads:
        err = float((grads[k] - ref_grads[k]).abs().max()) / scale
        assert err <= rel, f"grad {k}: {err:.2e}"


@pytest.mark.parametrize("lengths", [None, (4, 2)])
def test_loop_backward_matches_finite_differences(lengths) -> None:
    torch.manual_seed(0)
    t, b, n, e, ha, hd, a, k = 4, 2, 5, 3, 4, 5, 3, 3
    dims = LoopDims(ha, hd, a, k, lengths)
    d = dict(dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    prior = torch.softmax(torch.randn(t, b, n, **d), -1) * 0.3
    drop = (torch.rand(t, b, ha, **d) > 0.3).to(torch.float64) / 0.7
    inputs = [torch.randn(t, b, 4 * ha, **d), torch.randn(b, n, e, **d), torch.randn(b, n, a, **d),
              torch.randn(a + 4 * hd + 4 * ha, ha, **d) * 0.5, torch.randn(4 * hd + 4 * ha, e, **d) * 0.5,
              torch.randn(4 * hd, hd, **d) * 0.5, torch.randn(4 * hd, **d), torch.randn(2 * k, a, **d),
              torch.randn(1, a, **d), torch.randn(1, **d)]
    inputs = [x.requires_grad_() for x in inputs]

    def f(*xs):
        return DecoderLoop.apply(*xs, mask, prior, 0.3, drop, None, dims)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_state_dict_keys_unchanged_and_loop_runs_without_grad() -> None:
    model = Tacotron2(ModelConfig.from_hparams(TINY)).eval()
    keys = set(model.state_dict())
    assert {"decoder.attention_rnn.weight_ih", "decoder.decoder_rnn.weight_hh", "decoder.attention.v.bias"} <= keys
    text, text_lens, mels, mel_lens = batch()
    with torch.inference_mode():
        out, _ = model(text, text_lens, mels, mel_lens)
    assert out.mels.shape == mels.shape and out.mels.isfinite().all() and out.alignments.sum(-1).max() <= 1 + 1e-6


def test_steps_past_the_end_never_read_unwritten_memory() -> None:
    """With deterministic algorithms on, torch fills every uninitialised tensor with NaN: a buffer the
    loop did not write (a row's steps past its end) that reached an output or a gradient shows up."""
    assert torch.utils.deterministic.fill_uninitialized_memory
    torch.manual_seed(0)
    model = Tacotron2(ModelConfig.from_hparams(TINY)).to(torch.float64).train()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.empty(2, dtype=torch.float64).isnan().all()
        out, grads = run(model, False, torch.float64, 0.7, (2, 0, 1))
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(bool(x.isfinite().all()) for x in out)
    assert grads and all(bool(g.isfinite().all()) for g in grads.values())
