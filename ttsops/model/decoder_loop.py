"""The teacher-forced decoder recurrence as one autograd node with a hand-written backward.

Why: run step by step under autograd, Tacotron2's decoder (two LSTM cells, location-sensitive
attention, softmax, context) records ~40 small ops per step, and its backward computes every weight
gradient once per step as a (4H x B) @ (B x H) product with B = 16 and adds it into the gradient
(a 1 MB read-modify-write per weight per step). Here the forward loop writes what the backward needs
into preallocated (T, ...) buffers, the backward loop propagates only activation gradients, and each
weight gradient is one large matmul over all T x B rows at the end.

Each recurrent state is multiplied by one fused matrix per step (rows of the model's parameters,
concatenated by the caller):

* ``ah_t @ w_ah.T`` = [query | decoder-LSTM input (ah part) | next attention-LSTM recurrent part];
* ``ctx_t @ w_ctx.T`` = [decoder-LSTM input (ctx part) | next attention-LSTM input (ctx part)],
  added onto the last two blocks of the line above in the same ``addmm``;
* ``dh_t @ w_dh.T + b_d``, the next decoder-LSTM recurrent part with both of its biases.

The prenet's share of the attention LSTM's input projection (with both of its biases) is not
recurrent: it arrives precomputed for all steps as ``xa``. Gates are in PyTorch's i, f, g, o order.
Same maths as ``Decoder._step``; only the float summation order differs (and masked energies are
``e - 1e4`` instead of ``-1e4``: both underflow to an attention weight of exactly 0).
tests/unit/model/test_decoder_loop.py checks outputs and gradients against a step-by-step
autograd reference, in float64 and float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

aten = torch.ops.aten  # the fused backward ops autograd itself uses (sigmoid_backward, ...)


@dataclass(frozen=True)
class LoopDims:
    attention_rnn: int  # Ha
    decoder_rnn: int  # Hd
    attention: int  # A
    location_kernel: int  # K (odd)


def lstm_cell_forward(gates: torch.Tensor, c_prev: torch.Tensor | None, act: torch.Tensor, c: torch.Tensor,
                      h: torch.Tensor, drop: torch.Tensor | None) -> None:
    """Gate pre-activations (B, 4H) -> activated gates into ``act``, cell into ``c``, hidden state
    (times the dropout mask ``drop``) into ``h``."""
    n = c.size(1)
    torch.sigmoid(gates, out=act)
    torch.tanh(gates[:, 2 * n:3 * n], out=act[:, 2 * n:3 * n])
    i, f, g, o = act.chunk(4, 1)
    torch.mul(i, g, out=c)
    if c_prev is not None:
        c.addcmul_(f, c_prev)
    torch.mul(o, torch.tanh(c), out=h)
    if drop is not None:
        h.mul_(drop)


def lstm_cell_backward(g_h: torch.Tensor, g_c_next: torch.Tensor | None, act: torch.Tensor, c: torch.Tensor,
                       c_prev: torch.Tensor | None, d_gates: torch.Tensor) -> torch.Tensor:
    """Gradient of the gate pre-activations into ``d_gates`` (B, 4H); returns the gradient of c_prev.
    ``g_h`` is the gradient of the hidden state before dropout."""
    n = c.size(1)
    i, f, g, o = act.chunk(4, 1)
    tc = torch.tanh(c)
    g_c = aten.tanh_backward(g_h * o, tc)
    if g_c_next is not None:
        g_c += g_c_next
    torch.mul(g_c, g, out=d_gates[:, :n])
    if c_prev is None:
        d_gates[:, n:2 * n] = 0
    else:
        torch.mul(g_c, c_prev, out=d_gates[:, n:2 * n])
    torch.mul(g_c, i, out=d_gates[:, 2 * n:3 * n])
    torch.mul(g_h, tc, out=d_gates[:, 3 * n:])
    aten.sigmoid_backward.grad_input(d_gates, act, grad_input=d_gates)
    d_g = d_gates[:, 2 * n:3 * n]
    aten.tanh_backward.grad_input(g_c * i, g, grad_input=d_g)
    return g_c * f


def location_cols(att: torch.Tensor, k: int) -> torch.Tensor:
    """(..., 2, N + K - 1) padded [w_prev, w_cum] -> (prod(...) * N, 2K) windows: the location
    conv's im2col, so conv and dense are one matmul."""
    cols = att.unfold(-1, k, 1)  # (..., 2, N, K)
    return cols.transpose(-3, -2).reshape(-1, 2 * k)


class DecoderLoop(torch.autograd.Function):
    """Outputs (T, B, .): decoder hidden states, contexts, attention used, prior-free attention.

    ``prior`` (T, B, N) is ``lam * prior probabilities`` or None; ``mask_a``/``mask_d`` are the
    (T, B, H) dropout masks of the two LSTMs' outputs or None.
    """

    @staticmethod
    def forward(ctx, xa, memory, pm, w_ah, w_ctx, w_dh, b_d, loc_w, v_w, v_b, mask, prior, lam, mask_a, mask_d,
                dims: LoopDims):
        t_dec, b, _ = xa.shape
        n, a, k = memory.size(1), dims.attention, dims.location_kernel
        ha, hd, p = dims.attention_rnn, dims.decoder_rnn, (k - 1) // 2
        new = xa.new_empty
        ga, ac, ah = new(t_dec, b, 4 * ha), new(t_dec, b, ha), new(t_dec, b, ha)
        gd, dc, dh = new(t_dec, b, 4 * hd), new(t_dec, b, hd), new(t_dec, b, hd)
        z, learned, ctxs = new(t_dec, b, n, a), new(t_dec, b, n), new(t_dec, b, memory.size(2))
        att = xa.new_zeros(t_dec + 1, b, 2, n + 2 * p)  # att[t]: step t's [w_{t-1}, w_cum_{t-1}], padded
        used = att[1:, :, 0, p:p + n]
        e_bias = (v_b + torch.where(mask, 0.0, -1e4)).reshape(-1).to(xa.dtype)
        pm_flat = pm.reshape(b * n, a)
        acc, dh_proj = xa[0], b_d  # acc: [g_d(t) | g_a(t+1)] from ah_t and ctx_t; dh_proj: the rest of g_d(t)
        for t in range(t_dec):
            g_a = xa[t] if t == 0 else xa[t] + acc[:, 4 * hd:]
            lstm_cell_forward(g_a, ac[t - 1] if t else None, ga[t], ac[t], ah[t], None if mask_a is None else mask_a[t])
            ah_proj = ah[t] @ w_ah.t()
            pre = torch.addmm(pm_flat, location_cols(att[t], k), loc_w).view(b, n, a)
            torch.tanh(pre.add_(ah_proj[:, None, :a]), out=z[t])
            energies = torch.addmv(e_bias, z[t].view(b * n, a), v_w[0]).view(b, n)
            aten._softmax.out(energies, -1, False, out=learned[t])
            if prior is None:
                used[t].copy_(learned[t])
            else:
                torch.add(prior[t], learned[t], alpha=1.0 - lam, out=used[t])
            torch.add(att[t, :, 1, p:p + n], used[t], out=att[t + 1, :, 1, p:p + n])
            torch.bmm(used[t].unsqueeze(1), memory, out=ctxs[t].unsqueeze(1))
            acc = torch.addmm(ah_proj[:, a:], ctxs[t], w_ctx.t())
            g_d = acc[:, :4 * hd] + dh_proj
            lstm_cell_forward(g_d, dc[t - 1] if t else None, gd[t], dc[t], dh[t], None if mask_d is None else mask_d[t])
            if t + 1 < t_dec:
                dh_proj = torch.addmm(b_d, dh[t], w_dh.t())
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(memory, w_ah, w_ctx, w_dh, loc_w, v_w, mask_a, mask_d,
                                  ga, ac, ah, gd, dc, dh, z, learned, ctxs, att)
            ctx.lam, ctx.dims = (lam if prior is not None else 0.0), dims
        return dh, ctxs, used, learned

    @staticmethod
    def backward(ctx, g_dh, g_ctx_out, g_used, g_learned):
        with torch.autocast(ctx.saved_tensors[0].device.type, enabled=False):
            return (*_backward(ctx, g_dh, g_ctx_out, g_used, g_learned), None, None, None, None, None, None)


def _backward(ctx, g_dh, g_ctx_out, g_used, g_learned):
    (memory, w_ah, w_ctx, w_dh, loc_w, v_w, mask_a, mask_d,
     ga, ac, ah, gd, dc, dh, z, learned, ctxs, att) = ctx.saved_tensors
    dims, lam = ctx.dims, ctx.lam
    t_dec, b, n, a = z.shape
    hd, k = dims.decoder_rnn, dims.location_kernel
    p = (k - 1) // 2
    # rows[t] = d(ah_t @ w_ah.T) = [d query_t | d g_d(t) | d g_a(t+1)]; its last two blocks are also
    # d(ctx_t @ w_ctx.T), and d g_d(t + 1) is d(dh_t @ w_dh.T + b_d)
    rows = ga.new_zeros(t_dec, b, a + 4 * hd + 4 * dims.attention_rnn)
    d_gd, d_ga_next = rows[:, :, a:a + 4 * hd], rows[:, :, a + 4 * hd:]
    d_ga0 = ga.new_empty(b, 4 * dims.attention_rnn)
    g_ctx_all, d_e, d_pre = ga.new_empty(t_dec, b, memory.size(2)), ga.new_empty(t_dec, b, n), torch.empty_like(z)
    zero_bn = ga.new_zeros(b, n)
    d_ac = d_dc = None
    carry = g_cum = zero_bn  # gradient reaching w_t from step t+1's location features and from w_cum_t
    for t in reversed(range(t_dec)):
        # decoder LSTM
        g_h = g_dh[t] if g_dh is not None else ga.new_zeros(b, hd)
        if t + 1 < t_dec:
            g_h = torch.addmm(g_h, d_gd[t + 1], w_dh)
        if mask_d is not None:
            g_h = g_h * mask_d[t]
        d_dc = lstm_cell_backward(g_h, d_dc, gd[t], dc[t], dc[t - 1] if t else None, d_gd[t])
        # context -> attention weights used -> prior-free attention -> energies
        g_ctx = torch.addmm(g_ctx_out[t], rows[t, :, a:], w_ctx, out=g_ctx_all[t]) if g_ctx_out is not None \
            else torch.mm(rows[t, :, a:], w_ctx, out=g_ctx_all[t])
        g_w = carry if g_used is None else carry + g_used[t]
        g_w = torch.baddbmm(g_w.unsqueeze(2), memory, g_ctx.unsqueeze(2)).squeeze(2)
        if lam:
            g_w = g_w * (1.0 - lam)
        if g_learned is not None:
            g_w = g_w + g_learned[t]
        aten._softmax_backward_data.out(g_w, learned[t], -1, learned.dtype, grad_input=d_e[t])
        aten.tanh_backward.grad_input(d_e[t].unsqueeze(-1) * v_w[0], z[t], grad_input=d_pre[t])
        torch.sum(d_pre[t], 1, out=rows[t, :, :a])
        if t > 0:  # step 0's location input is all zeros: nothing to propagate
            d_cols = (d_pre[t].view(b * n, a) @ loc_w.t()).view(b, n, 2, k).transpose(1, 2)
            d_att = aten.unfold_backward(d_cols, [b, 2, n + 2 * p], 2, k, 1)[:, :, p:p + n]
            g_cum = g_cum + d_att[:, 1]
            carry = d_att[:, 0] + g_cum
        # attention LSTM
        g_h = rows[t] @ w_ah
        if mask_a is not None:
            g_h *= mask_a[t]
        d_ac = lstm_cell_backward(g_h, d_ac, ga[t], ac[t], ac[t - 1] if t else None,
                                  d_ga_next[t - 1] if t else d_ga0)
    flat = lambda x: x.reshape(-1, x.size(-1))  # noqa: E731
    d_xa = torch.cat([d_ga0.unsqueeze(0), d_ga_next[:-1]])
    d_memory = torch.bmm(att[1:, :, 0, p:p + n].permute(1, 2, 0), g_ctx_all.transpose(0, 1))
    d_w_ah = flat(rows).t() @ flat(ah)
    d_w_ctx = flat(rows)[:, a:].t() @ flat(ctxs)
    d_w_dh = flat(rows)[b:, a:a + 4 * hd].t() @ flat(dh[:-1])
    d_b_d = d_gd.sum((0, 1))
    d_loc_w = location_cols(att[:-1], k).t() @ flat(d_pre)
    d_v = (flat(z).t() @ d_e.reshape(-1)).unsqueeze(0)
    return d_xa, d_memory, d_pre.sum(0), d_w_ah, d_w_ctx, d_w_dh, d_b_d, d_loc_w, d_v, d_e.sum().reshape(1)
