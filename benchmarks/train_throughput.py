"""Training throughput: mel frames per second of one teacher-forced training step.

The shared workload of ../shared/BENCHMARKS.md: the 64 sentences of bench/sentences.txt spoken by
``flite -voice rms`` at 22050 Hz, batch 16, forward + loss + backward + clip 1.0 + Adam 1e-3, fp32,
3 warm-up steps then the median of 10 timed steps. frames/s = target frames in the batch / s per step.

    .venv/bin/python benchmarks/train_throughput.py [--sizes demo,small,spec] [--threads 2] [--device cpu] [--amp]
    .venv/bin/python benchmarks/train_throughput.py --vs-coqui [--sizes small,demo] [--threads 1,2] [--rounds 3]

``--amp`` runs the forward pass under autocast (bf16 where the GPU has it, else fp16 with a gradient
scaler), as train.py does with ``resources.mixed_precision`` on CUDA; the loss stays fp32.

Sizes: ``spec`` = NVIDIA Tacotron2 (r=1); ``small`` = BENCHMARKS.md's small (r=2); ``demo`` = configs/demo.yaml.

``--vs-coqui`` states the figure as a ratio: for each size and thread count it alternates this script
(in a fresh process, ``--batches coqui``) with Coqui TTS 0.28's Tacotron2 on the same four batches
(``../shared/bench/coqui/bench_coqui.py``, venv from its ``coqui_env.sh``), ``--rounds`` times, the
order swapped every round, and prints each round and the median ratio of mel frames per second
(mean frames per batch / median seconds per step, so one step stretched by a busy box does not
decide a round).

"""

from __future__ import annotations

import argparse
import json
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


def time_steps(model: Tacotron2, batches: list[dict], r: int, device: torch.device, n_warm: int = 3, n: int = 10,
               amp: torch.dtype | None = None) -> tuple[float, float]:
    """-> (median s/step, mean mel frames per timed step). Cycles through ``batches``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    times, frames = [], []
    for i in range(n_warm + n):
        b = {k: v.to(device) for k, v in batches[(i if i < n_warm else i - n_warm) % len(batches)].items()}
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
            frames.append(int(b["mel_lens"].sum()))
    return statistics.median(times), sum(frames) / len(frames)


def coqui_batches(data: MelDataset, r: int, seed: int = 1234) -> list[dict]:
    """The four batches of 16 that ``bench_coqui.py`` uses (its seeded shuffle of the 64 items)."""
    import random

    idx = list(range(len(data)))
    random.Random(seed).shuffle(idx)
    return [collate([data[i] for i in idx[k * 16:(k + 1) * 16]], r) for k in range(len(idx) // 16)]


COQUI_DIR = REPO.parent / "shared" / "bench" / "coqui"
COQUI_ARGS = {"small": ["small", "plain", "2"], "demo": ["small", "plain", "3"], "spec": ["full", "plain", "1"]}


def _run_result(cmd: list[str], env: dict, cwd: Path) -> dict:
    import json
    import subprocess

    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def vs_coqui(sizes: list[str], threads: list[int], rounds: int, steps: int) -> int:
    """Alternate ours and Coqui's on the same batches; print the median frames/s ratio per setting."""
    import os
    import subprocess

    coqui_py = Path(os.environ.get("COQUI_VENV", "/tmp/coqui-venv")) / "bin" / "python"
    subprocess.run(["bash", str(COQUI_DIR / "coqui_env.sh")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(coqui_py), str(COQUI_DIR / "prep_workload.py")], check=True, stdout=subprocess.DEVNULL)
    print(f"vs Coqui TTS 0.28 Tacotron2, {rounds} alternated rounds, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'size':<6} {'thr':>3} {'round':>5} {'ours s/step':>11} {'coqui s/step':>12} {'ours f/s':>9} "
          f"{'coqui f/s':>9} {'ratio':>6}")
    for size in sizes:
        for n_threads in threads:
            env = {**os.environ, "BENCH_THREADS": str(n_threads), "OMP_NUM_THREADS": str(n_threads)}
            ours_cmd = [sys.executable, __file__, "--sizes", size, "--threads", str(n_threads), "--steps", str(steps),
                        "--batches", "coqui", "--device", "cpu"]
            coqui_cmd = [str(coqui_py), "bench_coqui.py", *COQUI_ARGS[size]]
            ratios = []
            for k in range(rounds):
                runs = {}
                for who in (("ours", "coqui") if k % 2 == 0 else ("coqui", "ours")):
                    runs[who] = _run_result(ours_cmd, env, REPO) if who == "ours" else _run_result(coqui_cmd, env, COQUI_DIR)
                # frames/s at the median step (robust to the odd step a busy box stretches 10x)
                fo, fc = (x["mean_frames_per_batch"] / x["median_s"] for x in (runs["ours"], runs["coqui"]))
                ratios.append(fo / fc)
                print(f"{size:<6} {n_threads:>3} {k + 1:>5} {runs['ours']['median_s']:>11.3f} "
                      f"{runs['coqui']['median_s']:>12.3f} {fo:>9,.0f} {fc:>9,.0f} {ratios[-1]:>5.2f}x", flush=True)
            print(f"{size:<6} {n_threads:>3} median ratio (ours / Coqui mel frames/s): {statistics.median(ratios):.2f}x",
                  flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="demo,small,spec")
    ap.add_argument("--threads", default="2", help="torch threads (--vs-coqui: a list, e.g. 1,2)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "ttsops_bench_workload"))
    ap.add_argument("--sentences", type=Path, default=SHARED_SENTENCES, help="the 64 benchmark sentences")
    ap.add_argument("--amp", action="store_true", help="autocast the forward pass (bf16, or fp16 + scaler)")
    ap.add_argument("--batches", choices=["first16", "coqui"], default="first16",
                    help="one batch of the first 16 sentences, or the 4 batches bench_coqui.py cycles through")
    ap.add_argument("--vs-coqui", action="store_true", help="alternate with Coqui's Tacotron2, print ratios")
    ap.add_argument("--rounds", type=int, default=3, help="--vs-coqui: alternated rounds per setting")
    args = ap.parse_args()
    if args.vs_coqui:
        sizes = args.sizes.split(",") if args.sizes != "demo,small,spec" else ["small", "demo"]
        return vs_coqui(sizes, [int(t) for t in str(args.threads).split(",")], args.rounds, args.steps)
    torch.set_num_threads(int(args.threads))
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
          f"batches={args.batches} precision={'autocast ' + str(amp).split('.')[-1] if amp else 'fp32'}")
    print(f"{'size':<6} {'r':>2} {'params':>10} {'s/step':>8} {'mel frames/s':>13}")
    for size in args.sizes.split(","):
        hp = HParams().with_string(SIZES[size])
        r = hp.n_frames_per_step
        batches = coqui_batches(data, r) if args.batches == "coqui" else [collate([data[i] for i in range(16)], r)]
        torch.manual_seed(0)
        model = Tacotron2(ModelConfig.from_hparams(hp)).to(device).train()
        s, frames = time_steps(model, batches, r, device, n=args.steps, amp=amp)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{size:<6} {r:>2} {n_params:>10,} {s:>8.3f} {frames / s:>13,.0f}", flush=True)
        print("RESULT " + json.dumps({"size": size, "median_s": s, "mean_frames_per_batch": frames}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
