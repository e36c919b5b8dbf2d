"""One validation pass: losses, attention health, free-running fidelity, and on a schedule audio
quality, intelligibility and samples for people.

Cadence (validations are every ``val_every_epochs`` epochs; ``N``-th counts the validations of the
line: every process of this run, and a warm start's source when its weights were taken whole, so a
tuner generation continuing a line does not pay a complete validation at its start; the line's
first validation and the run's last one are always complete):

| metrics | when |
|---|---|
| ``val_loss``, ``mel_loss``, ``gate_loss``, ``attention_alignment_score``, ``attention_entropy`` | every validation |
| ``free_running_distance``, ``free_running_length_ratio`` | every validation |
| ``mcd``, ``pesq``, ``stoi`` + alignment/mel images and free-running audio | the line's first and every ``audio_metrics_every``-th |
| ``asr_wer``, ``asr_cer``, ``speaking_rate_ratio``, ``asr_wer_<list>`` | every ``intelligibility_every``-th and the last (0: the last only, -1: never) |

So everything the early-stop detectors read (the losses, the attention score, the free-running
distance) is fresh at every validation; the tuner's objective reads a scheduled metric (``mcd``,
``asr_wer``) as its latest value on the line (the checkpoint's, until this run measures it again).

Attention is measured on the *prior-free* teacher-forced alignments (what the model has learned,
not what the training prior imposes). Audio metrics vocode the teacher-forced postnet mel with
Griffin-Lim and compare it with the original recording (time-aligned by construction). The
free-running fidelity synthesises the first validation clips from their text alone and compares
their mel with the recording's after dynamic time warping (``ttsops.metrics.fidelity``): the
teacher-forced loss cannot see a decoder that only copies its previous input frame; this does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ttsops.audio.io import load_audio
from ttsops.audio.vocoder import GriffinLim
from ttsops.data.dataset import MelDataset, collate
from ttsops.infra.plotting import plot_alignment, plot_mels
from ttsops.metrics.attention import batch_alignment_metrics
from ttsops.metrics.audio_quality import mcd, pesq_wb, stoi
from ttsops.metrics.fidelity import free_running_distance
from ttsops.train.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cadence:
    """What this validation computes beyond the every-time metrics."""

    audio: bool = True
    intelligibility: bool = False

    @classmethod
    def of(cls, n: int, audio_every: int, intelligibility_every: int, last: bool = False) -> Cadence:
        """``n``: the line's validation count, 1 for its first (``Progress.validations``)."""
        return cls(audio=last or n == 1 or audio_every <= 1 or n % audio_every == 0,
                   intelligibility=intelligibility_every >= 0 and (
                       last or (intelligibility_every > 0 and n % intelligibility_every == 0)))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


@torch.no_grad()
def validate(trainer: Trainer, data: MelDataset, batch_size: int, cadence: Cadence = Cadence()
             ) -> tuple[dict[str, float], dict]:
    r = trainer.hp.n_frames_per_step
    trainer.model.eval()
    sums = {"val_loss": 0.0, "mel_loss": 0.0, "gate_loss": 0.0}
    aligns, ents, n_items = [], [], 0
    first = None
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(s, min(len(data), s + batch_size))], r)
            losses, out, post = trainer._losses(batch, train=False)
            k = batch["text"].size(0)
            for key, v in (("val_loss", losses.val), ("mel_loss", losses.mel), ("gate_loss", losses.gate)):
                sums[key] += float(v) * k
            dec = torch.div(batch["mel_lens"] + r - 1, r, rounding_mode="floor")
            score, ent = batch_alignment_metrics(out.learned_alignments.float().cpu().numpy(), batch["text_lens"], dec)
            aligns.append(score * k)
            ents.append(ent * k)
            n_items += k
            if first is None:
                first = (batch, post.float().cpu(), out.learned_alignments.float().cpu())
    if first is None:
        raise ValueError("validation needs at least one clip")
    metrics = {k: v / n_items for k, v in sums.items()}
    metrics["attention_alignment_score"] = sum(aligns) / n_items
    metrics["attention_entropy"] = sum(ents) / n_items
    free = free_running(trainer, first[0], trainer.hp.n_free_running_clips)
    metrics.update(free.metrics)
    if cadence.audio:
        metrics.update(_audio_metrics(trainer, data, first))
    return metrics, {"first": first, "free_running": free}


@dataclass(frozen=True)
class FreeRunning:
    metrics: dict[str, float]
    mels: list[np.ndarray]  # (n_mels, T) per clip, cropped to where the gate stopped
    alignments: list[np.ndarray]  # (T_dec, N) per clip


def free_running(trainer: Trainer, batch: dict[str, torch.Tensor], n_clips: int) -> FreeRunning:
    """Synthesise the batch's first ``n_clips`` texts free-running (one batched call) and compare each
    mel with its recording after DTW; ``free_running_length_ratio`` is synthesised / true frames."""
    n_clips = min(n_clips, batch["text"].size(0))
    if n_clips <= 0:
        return FreeRunning({}, [], [])
    r = trainer.hp.n_frames_per_step
    lens = batch["text_lens"][:n_clips]
    text = batch["text"][:n_clips, : int(lens.max())].to(trainer.device)
    mel, align, lengths = trainer.model.infer(text, lens.to(trainer.device))
    mels, aligns, dist, ratio = [], [], [], []
    for i in range(n_clips):
        n, t = int(lengths[i]), int(batch["mel_lens"][i])
        pred = mel[i, :, :n].float().cpu().numpy()
        mels.append(pred)
        aligns.append(align[i, : (n + r - 1) // r, : int(lens[i])].float().cpu().numpy())
        dist.append(free_running_distance(pred, batch["mels"][i, :, :t].numpy()))
        ratio.append(n / t)
    return FreeRunning({"free_running_distance": _nanmean(dist), "free_running_length_ratio": float(np.mean(ratio))},
                       mels, aligns)


def _audio_metrics(trainer: Trainer, data: MelDataset, first) -> dict[str, float]:
    """The first validation batch holds ``data``'s first items in order (``validate`` batches in order)."""
    hp = trainer.hp
    batch, post, _ = first
    vocoder = GriffinLim(hp.mel)
    m, p, s = [], [], []
    for i in range(min(hp.n_audio_metric_clips, post.size(0))):
        n = int(batch["mel_lens"][i])
        pred, target = post[i, :, :n].numpy(), batch["mels"][i, :, :n].numpy()
        m.append(mcd(target, pred))
        ref, sr = load_audio(data.utts[i].wav, hp.sample_rate)
        deg = vocoder(pred)
        p.append(pesq_wb(ref, deg, sr))
        s.append(stoi(ref, deg, sr))
    return {"mcd": _nanmean(m), "pesq": _nanmean(p), "stoi": _nanmean(s)}


def log_samples(trainer: Trainer, tracker, samples: dict, step: int) -> None:
    """Teacher-forced and free-running alignment/mel images and the free-running audio of the first
    validation clip (reuses what ``validate`` synthesised)."""
    hp = trainer.hp
    batch, post, learned = samples["first"]
    n, t = int(batch["text_lens"][0]), int(batch["mel_lens"][0])
    dec = (t + hp.n_frames_per_step - 1) // hp.n_frames_per_step
    target = batch["mels"][0, :, :t].numpy()
    tracker.log_samples(step, "teacher_forced", plot_alignment(learned[0, :dec, :n].numpy(), f"step {step}"),
                        plot_mels(target, post[0, :, :t].numpy()), None, hp.sample_rate)
    free: FreeRunning = samples["free_running"]
    if free.mels:
        mel = free.mels[0]
        tracker.log_samples(step, "free_running", plot_alignment(free.alignments[0], f"step {step}"),
                            plot_mels(target, mel), GriffinLim(hp.mel)(mel), hp.sample_rate)
