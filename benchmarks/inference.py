"""Inference benchmark: real-time factor on CPU (or --device) and HTTP latency under load.

    python benchmarks/inference.py [--checkpoint runs/.../best_model.pt] [--threads 2] [--json out.json]

1. RTF = synthesis seconds / audio seconds, in-process, split into the acoustic model (text ->
   mel) and the vocoder (Griffin-Lim), over the sentences below (median and pooled). Goal: <= 0.2.
2. Latency p50/p95 at 1 and 8 concurrent clients against a real ``ttsops serve`` (uvicorn in a
   subprocess on 127.0.0.1), each client sending its requests back to back.

Without --checkpoint a freshly initialised model of the demo size (configs/demo.yaml
training.hparams) is used and labelled as such: untrained, with its stop gate disabled
(gate_threshold 1.1) so every utterance runs to max_decoder_steps and lengths are comparable. Its
audio is noise, but the compute per audio second is that of a trained model of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    "She sells sea shells by the sea shore.",
    "A journey of a thousand miles begins with a single step.",
    "The committee will meet again on Tuesday to review the budget.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "It was the best of times, it was the worst of times.",
    "Speech synthesis turns written text into audible words.",
]


def build_checkpoint(args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    """The checkpoint to benchmark and a label saying what it is."""
    if args.checkpoint:
        return Path(args.checkpoint), f"checkpoint {args.checkpoint}"
    import torch

    from ttsops.config import load_config
    from ttsops.model.tacotron2 import ModelConfig, Tacotron2
    from ttsops.train.checkpoint import save_checkpoint
    from ttsops.train.hparams import HParams

    cfg = load_config(args.config)
    hp = HParams().replace(**{**cfg.training.hparams, "gate_threshold": 1.1})
    torch.manual_seed(0)
    model = Tacotron2(ModelConfig.from_hparams(hp))
    path = save_checkpoint(
        workdir / "best_model.pt", {"model": model.state_dict(), "hparams": hp.to_dict(), "step": 0}
    )
    label = (
        f"UNTRAINED demo-size model from {args.config} (freshly initialised, stop gate off: "
        f"every utterance runs {hp.max_decoder_steps} decoder steps x r={hp.n_frames_per_step})"
    )
    return path, label


def measure_rtf(checkpoint: Path, device: str, repeats: int) -> dict[str, Any]:
    from ttsops.model.inference import Synthesizer

    synth = Synthesizer.from_checkpoint(checkpoint, device=device)
    synth.synthesize(SENTENCES[0])  # warm-up: allocator, mel basis, first-call overheads
    rows = []
    for _ in range(repeats):
        for text in SENTENCES:
            t0, c0 = time.perf_counter(), time.process_time()
            mel, _ = synth.mel(text)
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            t1 = time.perf_counter()
            wav = synth.vocoder(mel)
            t2, c2 = time.perf_counter(), time.process_time()
            rows.append(
                {
                    "audio_s": len(wav) / synth.sample_rate,
                    "acoustic_s": t1 - t0,
                    "vocoder_s": t2 - t1,
                    "cpu_s": c2 - c0,
                }
            )
    audio = sum(r["audio_s"] for r in rows)
    return {
        "utterances": len(rows),
        "audio_seconds_mean": audio / len(rows),
        "rtf_pooled": sum(r["acoustic_s"] + r["vocoder_s"] for r in rows) / audio,
        "rtf_median": statistics.median((r["acoustic_s"] + r["vocoder_s"]) / r["audio_s"] for r in rows),
        "rtf_acoustic": sum(r["acoustic_s"] for r in rows) / audio,
        "rtf_vocoder": sum(r["vocoder_s"] for r in rows) / audio,
        # CPU seconds of this process per audio second: what the RTF would be on an idle core
        # with one thread; robust to other processes competing for the CPU (wall time is not)
        "cpu_seconds_per_audio_second": sum(r["cpu_s"] for r in rows) / audio,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, device: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "ttsops",
        "serve",
        "--model",
        f"bench={checkpoint}",
        "--port",
        str(port),
        "--device",
        device,
        "--threads",
        str(threads),
        "--log-level",
        "warning",
        "--max-text-chars",
        "1000",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ttsops serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ttsops serve did not become ready in 180 s")


def measure_latency(url: str, concurrency: int, per_client: int) -> dict[str, Any]:
    latencies: list[float] = []
    audio: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            c.post("/v1/tts", json={"text": SENTENCES[i % len(SENTENCES)]})  # warm-up, not counted
            barrier.wait()
            for k in range(per_client):
                t0 = time.perf_counter()
                resp = c.post("/v1/tts", json={"text": SENTENCES[(i + k) % len(SENTENCES)]})
                took = time.perf_counter() - t0
                with lock:
                    if resp.status_code == 200:
                        latencies.append(took)
                        audio.append(float(resp.headers["x-audio-seconds"]))
                    else:
                        errors.append(f"{resp.status_code} {resp.text[:100]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"), float("nan"))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "p50_s": float(p50),
        "p95_s": float(p95),
        "requests_per_s": len(latencies) / wall,
        "audio_seconds_per_s": sum(audio) / wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint", help="best_model.pt or a train.py checkpoint (default: untrained demo-size model)"
    )
    p.add_argument(
        "--config", default=str(REPO / "configs" / "demo.yaml"), help="sizes of the untrained model"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (in-process and server)")
    p.add_argument("--repeats", type=int, default=2, help="passes over the sentences for the RTF")
    p.add_argument("--requests", type=int, default=4, help="requests per client in the latency runs")
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ttsops-bench-") as tmp:
        checkpoint, label = build_checkpoint(args, Path(tmp))
        print(f"model: {label}", flush=True)
        rtf = measure_rtf(checkpoint, args.device, args.repeats)
        print(
            f"RTF pooled {rtf['rtf_pooled']:.3f} (median {rtf['rtf_median']:.3f}; acoustic "
            f"{rtf['rtf_acoustic']:.3f} + Griffin-Lim {rtf['rtf_vocoder']:.3f}) over {rtf['utterances']} "
            f"utterances of {rtf['audio_seconds_mean']:.2f} s; goal <= 0.2",
            flush=True,
        )
        print(
            f"CPU seconds per audio second {rtf['cpu_seconds_per_audio_second']:.3f} "
            f"(= the RTF on an idle core when --threads 1)",
            flush=True,
        )
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]  # "" skips the server runs
        latency = []
        proc, url = start_server(checkpoint, args.device, args.threads) if levels else (None, "")
        try:
            for c in levels:
                row = measure_latency(url, c, args.requests)
                latency.append(row)
                print(
                    f"{c} concurrent: p50 {row['p50_s']:.3f} s, p95 {row['p95_s']:.3f} s, "
                    f"{row['requests_per_s']:.2f} req/s, {row['audio_seconds_per_s']:.2f} audio-s/s, "
                    f"{len(row['errors'])} errors",
                    flush=True,
                )
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
    result = {
        "model": label,
        "device": args.device,
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rtf": rtf,
        "latency": latency,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
