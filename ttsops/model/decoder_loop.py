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

Steps past an utterance's end are not computed (``LoopDims.lengths``): rows sorted by decoder length,
longest first, so step t runs the first ``active[t]`` rows only, as a packed sequence does. The
outputs there are zeros and carry no gradient; the rows before are unchanged (row b at step t depends
on row b's earlier steps only). On the shared benchmark's batches 15-22% of the steps are padding.
tests/unit/model/test_decoder_loop.py checks outputs and gradients against a step-by-step
autograd reference, in float64 and float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

aten = torch.ops.aten  # the fused backward ops autograd itself uses (sigmoid_backward, ...)


@dataclass(frozen=True)
class LoopDims:
    attention_rnn: int  # Ha
    decoder_rnn: int  # Hd
    attention: int  # A
    location_kernel: int  # K (odd)
    lengths: tuple[int, ...] | None = None  # each row's decoder steps, non-increasing; None: all T_dec

    def active(self, t_dec: int, b: int) -> list[int]:
        """Rows that step t computes, for each step that computes any."""
        if self.lengths is None:
            return [b] * t_dec
        lengths = self.lengths
        assert len(lengths) == b and lengths[-1] > 0 and list(lengths) == sorted(lengths, reverse=True), lengths
        return [sum(1 for n in lengths if n > t) for t in range(min(t_dec, lengths[0]))]


def steps(x: torch.Tensor | None, active: Sequence[int], k: int = 1) -> list:
    """(T, B * k, ...) -> per computed step, the view of its ``active[t] * k`` first rows; None -> Nones."""
    if x is None:
        return [None] * len(active)
    return [v if v.size(0) == n * k else v[:n * k] for v, n in zip(x.unbind(0), active, strict=False)]


def head(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.size(0) == n else x[:n]


def zero_past_end(lengths: tuple[int, ...] | None, *xs: torch.Tensor) -> None:
    """Zero each (T, B, ...) tensor at the steps its row does not compute (never written there)."""
    for x in xs:
        for row, n in enumerate(lengths or ()):
            if n < x.size(0):
                x[n:, row].zero_()


class LstmBuffers:
    """One LSTM cell's activated gates, cell states and tanh(cell) for all steps, with the per-step
    views (whole gates, i, f, g, o) made once: building views inside the loop costs more dispatcher
    calls than the cell's arithmetic on these small tensors."""

    def __init__(self, act: torch.Tensor, c: torch.Tensor, tc: torch.Tensor, active: Sequence[int]) -> None:
        self.act, self.c, self.tc = act, c, tc  # (T, B, 4H), (T, B, H), (T, B, H)
        self.act_, self.c_, self.tc_ = steps(act, active), steps(c, active), steps(tc, active)
        self.i_, self.f_, self.g_, self.o_ = (steps(x, active) for x in act.chunk(4, -1))
        # step t - 1's cell state over step t's rows (t = 0 has none: an empty placeholder, never read)
        self.c_prev_ = [c[0, :0], *(head(x, n) for x, n in zip(self.c_, active[1:], strict=False))]

    @classmethod
    def empty(cls, t_dec: int, b: int, h: int, like: torch.Tensor, active: Sequence[int]) -> LstmBuffers:
        return cls(like.new_empty(t_dec, b, 4 * h), like.new_empty(t_dec, b, h), like.new_empty(t_dec, b, h), active)

    def forward(self, t: int, gates: torch.Tensor, h: torch.Tensor, drop: torch.Tensor | None) -> None:
        """Gate pre-activations (B, 4H), PyTorch's i, f, g, o order -> hidden state (times the
        dropout mask ``drop``) into ``h``; zero initial state at t = 0."""
        n = h.size(1)
        torch.sigmoid(gates, out=self.act_[t])
        torch.tanh(gates[:, 2 * n:3 * n], out=self.g_[t])
        torch.mul(self.i_[t], self.g_[t], out=self.c_[t])
        if t:
            self.c_[t].addcmul_(self.f_[t], self.c_prev_[t])
        torch.tanh(self.c_[t], out=self.tc_[t])
        torch.mul(self.o_[t], self.tc_[t], out=h)
        if drop is not None:
            h.mul_(drop)

    def backward(self, t: int, g_h: torch.Tensor, g_c_next: torch.Tensor | None,
                 d_gates: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                 d_all: torch.Tensor) -> torch.Tensor:
        """Gradient of step t's gate pre-activations into ``d_all`` (B, 4H), whose i, f, g, o blocks
        are ``d_gates``; returns the gradient of the previous cell state. ``g_h``: gradient of the
        hidden state before dropout; ``g_c_next``: of this step's cell state, from step t + 1 (whose
        rows may be fewer)."""
        i, f, g, o, tc = self.i_[t], self.f_[t], self.g_[t], self.o_[t], self.tc_[t]
        d_i, d_f, d_g, d_o = d_gates
        g_c = aten.tanh_backward(g_h * o, tc)
        if g_c_next is not None:
            head(g_c, g_c_next.size(0)).add_(g_c_next)
        torch.mul(g_c, g, out=d_i)
        if t:
            torch.mul(g_c, self.c_prev_[t], out=d_f)
        else:
            d_f.zero_()
        torch.mul(g_h, tc, out=d_o)
        aten.sigmoid_backward.grad_input(d_all, self.act_[t], grad_input=d_all)  # i, f, o (g overwritten next)
        aten.tanh_backward.grad_input(g_c * i, g, grad_input=d_g)
        return g_c * f


class DecoderLoop(torch.autograd.Function):
    """Outputs (T, B, .): decoder hidden states, contexts, attention used, prior-free attention.

    ``prior`` (T, B, N) is ``lam * prior probabilities`` or None; ``mask_a``/``mask_d`` are the
    (T, B, H) dropout masks of the two LSTMs' outputs or None.
    """

    @staticmethod
    def forward(ctx, xa, memory, pm, w_ah, w_ctx, w_dh, b_d, loc_w, v_w, v_b, mask, prior, lam, mask_a, mask_d,
                dims: LoopDims):
        t_dec, b, _ = xa.shape
        n, a, k, act = memory.size(1), dims.attention, dims.location_kernel, dims.active(xa.size(0), xa.size(1))
        ha, hd, p = dims.attention_rnn, dims.decoder_rnn, (k - 1) // 2
        new = xa.new_empty
        cell_a, cell_d = LstmBuffers.empty(t_dec, b, ha, xa, act), LstmBuffers.empty(t_dec, b, hd, xa, act)
        ah, dh, z, learned, ctxs = new(t_dec, b, ha), new(t_dec, b, hd), new(t_dec, b, n, a), new(t_dec, b, n), \
            new(t_dec, b, memory.size(2))
        cols = new(t_dec, b * n, 2 * k)  # the location conv's input windows (im2col), kept for backward
        att = xa.new_zeros(t_dec + 1, b, 2, n + 2 * p)  # att[t]: step t's [w_{t-1}, w_cum_{t-1}], padded
        used = att[1:, :, 0, p:p + n]
        e_bias = (v_b + torch.where(mask, 0.0, -1e4)).reshape(-1).to(xa.dtype)
        pm_flat, w_ah_t, w_ctx_t, w_dh_t, v = pm.reshape(b * n, a), w_ah.t(), w_ctx.t(), w_dh.t(), v_w[0]
        # per-step views made once (unbind) rather than by indexing inside the loop
        windows = steps(att.unfold(-1, k, 1).transpose(-3, -2), act)  # (B, N, 2, K) each
        cums = att[:, :, 1, p:p + n].unbind(0)
        xa_, ah_, dh_, z_, learned_, ctxs_, used_, prior_, mask_a_, mask_d_ = (
            steps(x, act) for x in (xa, ah, dh, z, learned, ctxs, used, prior, mask_a, mask_d))
        cols_ = steps(cols, act, n)
        g_a, dh_proj = xa_[0], b_d  # pre-activations: attention LSTM at t; dh_{t-1}'s share of g_d(t)
        for t, m in enumerate(act):
            cell_a.forward(t, g_a, ah_[t], mask_a_[t])
            q, ah_rest = (ah_[t] @ w_ah_t).split([a, w_ah.size(0) - a], 1)
            cols_[t].view(m, n, 2, k).copy_(windows[t])
            pre = torch.addmm(head(pm_flat, m * n), cols_[t], loc_w).view(m, n, a)
            torch.tanh(pre.add_(q.unsqueeze(1)), out=z_[t])
            energies = torch.addmv(head(e_bias, m * n), z_[t].view(m * n, a), v).view(m, n)
            aten._softmax.out(energies, -1, False, out=learned_[t])
            if prior_[t] is None:
                used_[t].copy_(learned_[t])
            else:
                torch.add(prior_[t], learned_[t], alpha=1.0 - lam, out=used_[t])
            torch.add(head(cums[t], m), used_[t], out=head(cums[t + 1], m))
            torch.bmm(used_[t].unsqueeze(1), head(memory, m), out=ctxs_[t].unsqueeze(1))
            g_d, g_a_next = torch.addmm(ah_rest, ctxs_[t], w_ctx_t).split([4 * hd, 4 * ha], 1)
            cell_d.forward(t, g_d + (head(dh_proj, m) if t else dh_proj), dh_[t], mask_d_[t])
            if t + 1 < len(act):
                dh_proj = torch.addmm(b_d, dh_[t], w_dh_t)
                g_a = xa_[t + 1] + head(g_a_next, act[t + 1])
        zero_past_end(dims.lengths, ah, dh, z, learned, ctxs, cols.view(t_dec, b, -1))  # read by the weight grads
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(memory, w_ah, w_ctx, w_dh, loc_w, v_w, mask_a, mask_d, cell_a.act, cell_a.c,
                                  cell_a.tc, cell_d.act, cell_d.c, cell_d.tc, ah, dh, z, learned, ctxs, att, cols)
            ctx.lam, ctx.dims = (lam if prior is not None else 0.0), dims
            ctx.set_materialize_grads(False)  # outputs the loss does not use get None, not zeros
        return dh, ctxs, used, learned

    @staticmethod
    def backward(ctx, g_dh, g_ctx_out, g_used, g_learned):
        with torch.autocast(ctx.saved_tensors[0].device.type, enabled=False):
            return (*_backward(ctx, g_dh, g_ctx_out, g_used, g_learned), None, None, None, None, None, None)


def _pad_rows(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x`` with zero rows appended up to ``m`` rows (a step before has more rows than the one after)."""
    return x if x.size(0) == m else torch.cat([x, x.new_zeros(m - x.size(0), *x.shape[1:])])


def _prior_free_grad(carry, g_used, g_ctx, memory_t, g_learned, lam: float) -> torch.Tensor:
    """One step's gradient at the prior-free attention: from the context (through the attention used,
    ``(1 - lam) * learned + lam * prior``), the next steps' location features, and the output itself."""
    g_w = carry if g_used is None else carry + g_used
    g_w = torch.baddbmm(g_w.unsqueeze(1), g_ctx.unsqueeze(1), memory_t).squeeze(1)
    if g_learned is not None:
        return torch.add(g_learned, g_w, alpha=1.0 - lam)
    return g_w * (1.0 - lam) if lam else g_w


def _location_backward(d_pre: torch.Tensor, loc_w_t: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The location features' gradient back to the previous and the cumulative attention (B, N) each."""
    b, n, _ = d_pre.shape
    p = (k - 1) // 2
    d_cols = (d_pre.reshape(b * n, -1) @ loc_w_t).view(b, n, 2, k).transpose(1, 2)
    return aten.unfold_backward(d_cols, [b, 2, n + 2 * p], 2, k, 1)[:, :, p:p + n].unbind(1)


def _energy_backward(g_w, learned, z, v, d_e, d_pre, d_q) -> None:
    """softmax -> v . tanh(z) backward for one step, into the preallocated d_e, d_pre, d_q."""
    aten._softmax_backward_data.out(g_w, learned, -1, learned.dtype, grad_input=d_e)
    torch.mul(d_e.unsqueeze(-1), v, out=d_pre)
    aten.tanh_backward.grad_input(d_pre, z, grad_input=d_pre)
    torch.sum(d_pre, 1, out=d_q)


def _backward(ctx, g_dh, g_ctx_out, g_used, g_learned):
    (memory, w_ah, w_ctx, w_dh, loc_w, v_w, mask_a, mask_d, a_act, a_c, a_tc, d_act, d_c, d_tc,
     ah, dh, z, learned, ctxs, att, cols) = ctx.saved_tensors
    (t_dec, b, n, a), dims, lam = z.shape, ctx.dims, ctx.lam
    hd, k, act = dims.decoder_rnn, dims.location_kernel, dims.active(t_dec, b)
    cell_a, cell_d = LstmBuffers(a_act, a_c, a_tc, act), LstmBuffers(d_act, d_c, d_tc, act)
    rows, d_ga0 = a_act.new_zeros(t_dec, b, a + 4 * hd + 4 * dims.attention_rnn), a_act.new_empty(b, 4 * dims.attention_rnn)
    g_ctx_all, d_e, d_pre = ctxs.new_empty(ctxs.shape), z.new_empty(t_dec, b, n), torch.empty_like(z)
    memory_t, v, loc_w_t = memory.transpose(1, 2).contiguous(), v_w[0], loc_w.t()  # (B, E, N): fast row @ memory.T
    rows_, d_q_, d_gd_, rows_ctx_, d_gd_next_, d_ga_ = _row_views(rows, d_ga0, a, hd, act)
    d_gd_gates, d_ga_gates = [x.chunk(4, -1) for x in d_gd_], [x.chunk(4, -1) for x in d_ga_]
    z_, learned_, g_ctx_all_, d_e_, d_pre_ = (steps(x, act) for x in (z, learned, g_ctx_all, d_e, d_pre))
    g_dh_, g_ctx_out_, g_used_, g_learned_, mask_a_, mask_d_ = (
        steps(x, act) for x in (g_dh, g_ctx_out, g_used, g_learned, mask_a, mask_d))
    # carry: the gradient reaching w_t from step t+1's location features and from w_cum_t (g_cum)
    d_ac, d_dc, carry = None, None, z.new_zeros(act[-1], n)
    g_cum = carry
    for t in reversed(range(len(act))):
        m = act[t]
        carry, g_cum = _pad_rows(carry, m), _pad_rows(g_cum, m)
        g_h = g_dh_[t] if g_dh_[t] is not None else z.new_zeros(m, hd)
        if t + 1 < len(act):
            g_h = torch.addmm(g_h, d_gd_next_[t], w_dh)
        if mask_d_[t] is not None:
            g_h = g_h * mask_d_[t]
        d_dc = cell_d.backward(t, g_h, d_dc, d_gd_gates[t], d_gd_[t])
        # context -> attention weights used -> prior-free attention -> energies
        if g_ctx_out_[t] is None:
            g_ctx = torch.mm(rows_ctx_[t], w_ctx, out=g_ctx_all_[t])
        else:
            g_ctx = torch.addmm(g_ctx_out_[t], rows_ctx_[t], w_ctx, out=g_ctx_all_[t])
        g_w = _prior_free_grad(carry, g_used_[t], g_ctx, head(memory_t, m), g_learned_[t], lam)
        _energy_backward(g_w, learned_[t], z_[t], v, d_e_[t], d_pre_[t], d_q_[t])
        if t > 0:  # step 0's location input is all zeros: nothing to propagate
            d_w_prev, d_cum_prev = _location_backward(d_pre_[t], loc_w_t, k)
            g_cum = g_cum + d_cum_prev
            carry = d_w_prev + g_cum
        # attention LSTM
        g_h = rows_[t] @ w_ah
        if mask_a_[t] is not None:
            g_h *= mask_a_[t]
        d_ac = cell_a.backward(t, g_h, d_ac, d_ga_gates[t], d_ga_[t])
    zero_past_end(dims.lengths, g_ctx_all, d_e, d_pre)
    d_xa = torch.cat([d_ga0.unsqueeze(0), rows[:-1, :, a + 4 * hd:]])
    p = (k - 1) // 2
    d_memory = torch.bmm(att[1:, :, 0, p:p + n].permute(1, 2, 0), g_ctx_all.transpose(0, 1))
    return (d_xa, d_memory, d_pre.sum(0),
            *_weight_grads(rows, ah, ctxs, dh, rows[:, :, a:a + 4 * hd], cols, d_pre, z, d_e, a, hd, b))


def _row_views(rows: torch.Tensor, d_ga0: torch.Tensor, a: int, hd: int, act: Sequence[int]) -> tuple[list, ...]:
    """rows[t] = d(ah_t @ w_ah.T) = [d query_t | d g_d(t) | d g_a(t+1)]; its last two blocks are also
    d(ctx_t @ w_ctx.T), and d g_d(t + 1) is d(dh_t @ w_dh.T + b_d); zero where a row is past its end.
    -> per computed step over its rows: rows, d query, d g_d(t), the last two blocks, d g_d(t + 1),
    d g_a(t) (``d_ga0`` at t = 0)."""
    d_gd_all, d_ga_next_all = rows[:, :, a:a + 4 * hd], rows[:, :, a + 4 * hd:]
    d_gd_next_ = [head(x, m) for x, m in zip(d_gd_all[1:].unbind(0), act, strict=False)]
    d_ga_ = [d_ga0, *(head(x, m) for x, m in zip(d_ga_next_all.unbind(0), act[1:], strict=False))]
    return (*(steps(x, act) for x in (rows, rows[:, :, :a], d_gd_all, rows[:, :, a:])), d_gd_next_, d_ga_)


def _weight_grads(rows, ah, ctxs, dh, d_gd_all, cols, d_pre, z, d_e, a: int, hd: int, b: int):
    """Every weight's gradient as one matmul over all steps (what the step loop only collected)."""
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.size(-1))

    d_w_ah = flat(rows).t() @ flat(ah)
    d_w_ctx = flat(rows)[:, a:].t() @ flat(ctxs)
    d_w_dh = flat(rows)[b:, a:a + 4 * hd].t() @ flat(dh[:-1])
    d_loc_w = flat(cols).t() @ flat(d_pre)
    d_v = (flat(z).t() @ d_e.reshape(-1)).unsqueeze(0)
    return d_w_ah, d_w_ctx, d_w_dh, d_gd_all.sum((0, 1)), d_loc_w, d_v, d_e.sum().reshape(1)
