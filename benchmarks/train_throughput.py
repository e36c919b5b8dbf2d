"""Training throughput: mel frames per second of one teacher-forced training step.

The shared workload of ../shared/BENCHMARKS.md: the 64 sentences of bench/sentences.txt spoken by
``flite -voice rms`` at 22050 Hz, batch 16, forward + loss + backward + clip 1.0 + Adam 1e-3, fp32,
3 warm-up steps then the median of 10 timed steps. frames/s = target frames in the batch / s per step.

    .venv/bin/python benchmarks/train_throughput.py [--sizes demo,small,spec] [--threads 2] [--device cpu] [--amp]

``--amp`` runs the forward pass under autocast (bf16 where the GPU has it, else fp16 with a gradient
scaler), as train.py does with ``resources.mixed_precision`` on CUDA; the loss stays fp32.

Sizes: ``spec`` = NVIDIA Tacotron2 (r=1); ``small`` = BENCHMARKS.md's small (r=2); ``demo`` = configs/demo.yaml.

"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ttsops.data.corpus import synth_utterance  # noqa: E402
from ttsops.data.dataset import MelDataset, Utterance, collate  # noqa: E402
from ttsops.model.loss import tacotron2_loss  # noqa: E402
from ttsops.model.tacotron2 import ModelConfig, Tacotron2  # noqa: E402
from ttsops.train.hparams import HParams  # noqa: E402

SIZES = {
    "spec": "n_frames_per_step=1",
    "small": "encoder_embedding_dim=128,attention_rnn_dim=256,decoder_rnn_dim=256,prenet_dim=128,"
             "attention_dim=64,postnet_embedding_dim=128,n_frames_per_step=2",
    "demo": "encoder_embedding_dim=128,attention_rnn_dim=256,decoder_rnn_dim=256,prenet_dim=128,"
            "attention_dim=64,postnet_embedding_dim=128,n_frames_per_step=3",
}


SHARED_SENTENCES = REPO.parent / "shared" / "bench" / "sentences.txt"


def sentences(path: Path = SHARED_SENTENCES) -> list[str]:
    if not path.exists():
        sys.exit(f"benchmark sentences not found: {path}")
    return [s.strip() for s in path.read_text().splitlines() if s.strip()][:64]


def workload(workdir: Path, mel_hp: HParams, sentences_file: Path = SHARED_SENTENCES) -> MelDataset:
    import hashlib

    import soundfile as sf

    utts = []
    for i, text in enumerate(sentences(sentences_file)):
        wav = workdir / f"b{i:02d}.wav"
        if not wav.exists():
            synth_utterance(text, wav, voice="rms")
        utts.append(Utterance(f"b{i:02d}", text.lower(), wav, hashlib.sha256(wav.read_bytes()).hexdigest(),
                              sf.info(str(wav)).duration))
    return MelDataset(utts, mel_hp.mel, workdir / ".mel_cache")


def time_steps(model: Tacotron2, batch: dict, r: int, device: torch.device, n_warm: int = 3, n: int = 10,
               amp: torch.dtype | None = None) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    b = {k: v.to(device) for k, v in batch.items()}
    times = []
    for i in range(n_warm + n):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out, post = model(b["text"], b["text_lens"], b["mels"], b["mel_lens"], prior_weight=1.0)
        loss = tacotron2_loss(out.mels.float(), post.float(), out.gates.float(), out.learned_alignments.float(),
                              b["mels"], b["mel_lens"], b["text_lens"], r, 5.0, 10.0, 0.2)
        opt.zero_grad()
        scaler.scale(loss.total).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= n_warm:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="demo,small,spec")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "ttsops_bench_workload"))
    ap.add_argument("--sentences", type=Path, default=SHARED_SENTENCES, help="the 64 benchmark sentences")
    ap.add_argument("--amp", action="store_true", help="autocast the forward pass (bf16, or fp16 + scaler)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workload(workdir, HParams(), args.sentences)
    batch = collate([data[i] for i in range(16)], 1)
    amp = None
    if args.amp:
        amp = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"device={device}{gpu} threads={args.threads} batch=16 frames/batch={int(batch['mel_lens'].sum())} "
          f"precision={'autocast ' + str(amp).split('.')[-1] if amp else 'fp32'}")
    print(f"{'size':<6} {'r':>2} {'params':>10} {'s/step':>8} {'mel frames/s':>13}")
    for size in args.sizes.split(","):
        hp = HParams().with_string(SIZES[size])
        r = hp.n_frames_per_step
        b = collate([data[i] for i in range(16)], r)
        torch.manual_seed(0)
        model = Tacotron2(ModelConfig.from_hparams(hp)).to(device).train()
        s = time_steps(model, b, r, device, n=args.steps, amp=amp)
        frames = int(b["mel_lens"].sum())
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{size:<6} {r:>2} {n_params:>10,} {s:>8.3f} {frames / s:>13,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
