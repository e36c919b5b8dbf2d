"""Research probe: how fast does a *parallel* decoder learn intelligible speech on the demo corpus?

    .venv/bin/python benchmarks/parallel_decoder_probe.py CHECKPOINT DATASET [--minutes 25] [--every 3]

Not product code: a measurement that tells the next step of the intelligibility work. It reads
phoneme durations off an aligned Tacotron2 checkpoint's teacher-forced attention (the argmax token
of each decoder step, times r frames), then trains a small non-autoregressive model on DATASET
(FastSpeech-style: a convolutional phoneme encoder, a duration predictor, the encoder outputs
repeated by their durations with the position inside the phoneme as a feature, a convolutional
decoder, L1 on the log-mel) and every ``--every`` CPU-minutes of training has it speak 10 in-domain
and 10 out-of-domain held-out sentences (predicted durations, Griffin-Lim, the bundled ASR).
CPU-minutes count the training steps only (the ASR checks are excluded).

Measured 2026-12-03 (benchmarks/README.md, "Intelligibility"): durations from the demo recipe's
checkpoint at step 448 (phonemes, frame dropout 0.3), 226 clips: in-domain WER 0.91 after 3
CPU-minutes, 0.80 after 9, 0.74 after 15, 0.71 after 25 (702 steps), where Tacotron2 itself is at
0.93-0.97 after 1,000-1,750 steps (~55-80 CPU-minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ttsops.audio.vocoder import GriffinLim  # noqa: E402
from ttsops.data.dataset import MelDataset, collate, load_utterances, split  # noqa: E402
from ttsops.metrics import intelligibility as intel  # noqa: E402
from ttsops.model.inference import Synthesizer  # noqa: E402


@torch.no_grad()
def attention_durations(synth: Synthesizer, data: MelDataset) -> list[torch.Tensor]:
    """Frames per token of every clip, from the teacher-forced prior-free attention."""
    r, out_d = synth.model.cfg.n_frames_per_step, []
    for s in range(0, len(data), 16):
        idx = list(range(s, min(len(data), s + 16)))
        b = collate([data[i] for i in idx], r)
        out, _ = synth.model(b["text"], b["text_lens"], b["mels"], b["mel_lens"], 0.0)
        for k in range(len(idx)):
            n, t = int(b["text_lens"][k]), int(b["mel_lens"][k])
            steps = (t + r - 1) // r
            peak = out.learned_alignments[k, :steps, :n].argmax(-1)
            d = torch.bincount(peak, minlength=n) * r
            d[peak[-1]] -= steps * r - t  # the last group is cut at the true length
            out_d.append(d)
    return out_d


class Block(nn.Module):
    def __init__(self, c: int, k: int = 5, p: float = 0.1) -> None:
        super().__init__()
        self.conv, self.norm, self.p = nn.Conv1d(c, c, k, padding=k // 2), nn.LayerNorm(c), p

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(F.relu(self.conv(x * mask)).transpose(1, 2)).transpose(1, 2)
        return (x + F.dropout(y, self.p, self.training)) * mask


class ParallelTTS(nn.Module):
    def __init__(self, n_symbols: int, c: int = 192, dc: int = 256, n_mels: int = 80) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_symbols, c)
        self.enc = nn.ModuleList(Block(c) for _ in range(4))
        self.dur = nn.Sequential(nn.Conv1d(c, c, 3, padding=1), nn.ReLU(), nn.Conv1d(c, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv1d(c, 1, 1))
        self.up = nn.Conv1d(c + 1, dc, 1)
        self.dec = nn.ModuleList(Block(dc) for _ in range(5))
        self.out = nn.Conv1d(dc, n_mels, 1)

    def encode(self, text: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(text.size(1))[None] < lens[:, None]).float()[:, None]
        x = self.emb(text).transpose(1, 2)
        for blk in self.enc:
            x = blk(x, mask)
        return x, mask

    def decode(self, x: torch.Tensor, durations: torch.Tensor, frames: int) -> torch.Tensor:
        """Tokens repeated by their durations, plus the position inside the token, -> log-mel."""
        b = x.size(0)
        h = x.new_zeros(b, x.size(1) + 1, frames)
        fmask = x.new_zeros(b, 1, frames)
        for i in range(b):
            d = durations[i].clamp(min=0)
            rep = torch.repeat_interleave(torch.arange(d.numel()), d)[:frames]
            pos = torch.cat([torch.arange(int(n)) / max(1, int(n)) for n in d])[:frames]
            h[i, :-1, : rep.numel()] = x[i][:, rep]
            h[i, -1, : rep.numel()] = pos
            fmask[i, 0, : rep.numel()] = 1
        y = self.up(h)
        for blk in self.dec:
            y = blk(y, fmask)
        return self.out(y)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="an aligned Tacotron2 checkpoint (its attention gives durations)")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--minutes", type=float, default=25.0, help="CPU-minutes of training")
    ap.add_argument("--every", type=float, default=3.0, help="CPU-minutes between ASR checks")
    ap.add_argument("--references", type=Path, default=Path("/tmp/ttsops-eval-references"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    synth = Synthesizer.from_checkpoint(args.checkpoint)
    cfg = synth.model.cfg
    utts, _ = split(load_utterances(args.dataset, 0.3, 12.0), 0.05)
    data = MelDataset(utts, synth.vocoder.mel.cfg, args.dataset / ".mel_cache", frontend=synth.frontend)
    durations = attention_durations(synth, data)
    model = ParallelTTS(cfg.n_symbols)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sets = {name: intel.load_heldout(name)[:10] for name in intel.HELDOUT_SETS}
    refs = intel.flite_references([s for v in sets.values() for s in v], args.references)
    asr, vocoder = intel.pocketsphinx_asr(), GriffinLim(synth.vocoder.mel.cfg)

    @torch.no_grad()
    def speak(text: str) -> tuple[np.ndarray, int, bool]:
        model.eval()
        ids = torch.tensor([synth.frontend.to_ids([text])[0]])
        x, _ = model.encode(ids, torch.tensor([ids.size(1)]))
        d = torch.clamp(torch.round(torch.exp(model.dur(x)[:, 0]) - 1), min=1).long()
        mel = model.decode(x, d, int(d.sum()))
        model.train()
        return vocoder(mel[0].numpy()), synth.sample_rate, True

    def check(step: int, cpu: float) -> None:
        scores = {n: intel.score_set(n, s, speak, asr, lambda t: len(refs[t][0]) / refs[t][1]) for n, s in sets.items()}
        print(json.dumps({"step": step, "cpu_minutes": round(cpu / 60, 2),
                          **{f"wer_{n}": s.wer for n, s in scores.items()},
                          "speaking_rate": scores["in_domain"].speaking_rate_ratio}), flush=True)

    rng, step, cpu, next_check = np.random.default_rng(0), 0, 0.0, 0.0
    while cpu < args.minutes * 60:
        order = rng.permutation(len(data))
        for s in range(0, len(order) - 15, 16):
            if cpu >= next_check * 60:
                check(step, cpu)
                next_check += args.every
            t0 = time.process_time()
            idx = order[s:s + 16]
            b = collate([data[i] for i in idx], 1)
            d = torch.nn.utils.rnn.pad_sequence([durations[i] for i in idx], batch_first=True)
            x, tmask = model.encode(b["text"], b["text_lens"])
            mel = model.decode(x, d, b["mels"].size(2))
            fmask = (torch.arange(b["mels"].size(2))[None] < b["mel_lens"][:, None]).float()[:, None]
            mel_loss = (torch.abs(mel - b["mels"]) * fmask).sum() / (fmask.sum() * mel.size(1))
            log_d = model.dur(x.detach())[:, 0]
            dur_loss = (((log_d - torch.log(d.float() + 1)) ** 2) * tmask[:, 0]).sum() / tmask.sum()
            opt.zero_grad()
            (mel_loss + dur_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            cpu += time.process_time() - t0
            if cpu >= args.minutes * 60:
                break
    check(step, cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
