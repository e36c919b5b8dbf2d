"""One validation pass: losses, attention health and audio quality, plus samples for people.

Attention is measured on the *prior-free* teacher-forced alignments (what the model has learned,
not what the training prior imposes). Audio metrics vocode the teacher-forced postnet mel with
Griffin-Lim and compare it with the original recording (time-aligned by construction). One clip is
also synthesised free-running (no teacher forcing): its alignment, mel and audio go to TensorBoard
and MLflow so a person can see and hear progress.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ttsops.audio.io import load_audio
from ttsops.audio.vocoder import GriffinLim
from ttsops.data.dataset import MelDataset, collate
from ttsops.infra.plotting import plot_alignment, plot_mels
from ttsops.metrics.attention import batch_alignment_metrics
from ttsops.metrics.audio_quality import mcd, pesq_wb, stoi
from ttsops.train.trainer import Trainer

logger = logging.getLogger(__name__)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


@torch.no_grad()
def validate(trainer: Trainer, data: MelDataset, batch_size: int) -> tuple[dict[str, float], dict]:
    r = trainer.hp.n_frames_per_step
    trainer.model.eval()
    sums = {"val_loss": 0.0, "mel_loss": 0.0, "gate_loss": 0.0}
    aligns, ents, n_items = [], [], 0
    first = None
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
    metrics = {k: v / n_items for k, v in sums.items()}
    metrics["attention_alignment_score"] = sum(aligns) / n_items
    metrics["attention_entropy"] = sum(ents) / n_items
    metrics.update(_audio_metrics(trainer, data, first))
    return metrics, {"first": first}


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


@torch.no_grad()
def log_samples(trainer: Trainer, tracker, data: MelDataset, first, step: int) -> None:
    """Teacher-forced and free-running alignment/mel images and the free-running audio."""
    hp = trainer.hp
    batch, post, learned = first
    n, t = int(batch["text_lens"][0]), int(batch["mel_lens"][0])
    dec = (t + hp.n_frames_per_step - 1) // hp.n_frames_per_step
    tracker.log_samples(step, "teacher_forced", plot_alignment(learned[0, :dec, :n].numpy(), f"step {step}"),
                        plot_mels(batch["mels"][0, :, :t].numpy(), post[0, :, :t].numpy()), None, hp.sample_rate)
    trainer.model.eval()
    text = batch["text"][:1, :n].to(trainer.device)
    mel, align, lengths = trainer.model.infer(text, torch.tensor([n], device=trainer.device))
    length = int(lengths[0])
    mel = mel[0, :, :length].float().cpu().numpy()
    wav = GriffinLim(hp.mel)(mel)
    steps = (length + hp.n_frames_per_step - 1) // hp.n_frames_per_step
    tracker.log_samples(step, "free_running", plot_alignment(align[0, :steps, :n].float().cpu().numpy(), f"step {step}"),
                        plot_mels(batch["mels"][0, :, :t].numpy(), mel), wav, hp.sample_rate)
