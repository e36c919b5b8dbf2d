"""The service and the CLI with the real ``Synthesizer`` on a tiny untrained Tacotron2 checkpoint:
it stops at a random frame (untrained gate, prenet dropout stays on at inference) or at
``max_decoder_steps`` x r of configs/tiny.yaml, i.e. at most 120 frames (~1.4 s of Griffin-Lim audio)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.helpers import TINY, free_port
from tests.integration.serve.serve_helpers import post_all_at_once
from ttsops.cli import main as ttsops_main
from ttsops.serve.loader import default_synthesizer_loader

MAX_SAMPLES = TINY["max_decoder_steps"] * TINY["n_frames_per_step"] * 256  # x hop_length


def _plausible(resp: httpx.Response) -> bool:
    """A 22.05 kHz WAV of 1..120 decoder frames (hop 256) that is not silence."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(resp.content), dtype="float32")
    assert sr == 22050 and abs(wav).max() > 0.1, (sr, abs(wav).max())  # peak-normalised Griffin-Lim
    assert 256 <= len(wav) <= MAX_SAMPLES, len(wav)
    assert float(resp.headers["x-audio-seconds"]) == pytest.approx(len(wav) / sr, abs=1e-3)
    return True


def test_real_model_over_http(serve, tiny_checkpoint):
    with serve({"tiny": str(tiny_checkpoint)}, default_synthesizer_loader("cpu")) as url:
        ok = httpx.post(f"{url}/v1/tts", json={"text": "Hello world, this is a test."}, timeout=60)
        openai = httpx.post(f"{url}/v1/audio/speech", json={"model": "tiny", "input": "Hi."}, timeout=60)
        unspeakable = httpx.post(f"{url}/v1/tts", json={"text": "~~~"}, timeout=60)
        models = httpx.get(f"{url}/v1/models").json()["data"]
    assert _plausible(ok) and _plausible(openai)
    assert unspeakable.status_code == 422 and "must contain some text to speak" in unspeakable.json()["detail"]
    assert models[0]["id"] == "tiny" and models[0]["sample_rate"] == 22050


def test_eight_concurrent_clients_on_the_real_model(serve, tiny_checkpoint):
    with serve({"tiny": str(tiny_checkpoint)}, default_synthesizer_loader("cpu")) as url:
        results = post_all_at_once(url, [f"Sentence number {i}." for i in range(8)], timeout=120)
    for resp in results:
        assert isinstance(resp, httpx.Response), resp
        assert _plausible(resp)


def test_synthesize_cli_writes_a_wav(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out" / "hello.wav"
    assert (
        ttsops_main(
            ["synthesize", "Hello from the command line.", "-o", str(out), "--model", str(tiny_checkpoint)]
        )
        == 0
    )
    info = sf.info(str(out))
    assert info.samplerate == 22050 and 0 < info.frames <= MAX_SAMPLES
    assert f"wrote {out}" in capsys.readouterr().err


@pytest.mark.usefixtures("tiny_checkpoint")
def test_cli_errors_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert (
        ttsops_main(["synthesize", "hi", "-o", str(tmp_path / "x.wav"), "--model", str(tmp_path / "nope.pt")])
        == 2
    )
    assert ttsops_main(["synthesize", "hi", "-o", str(tmp_path / "x.wav"), "--model", str(garbage)]) == 2
    assert ttsops_main(["synthesize", "hi", "-o", str(tmp_path / "x.wav")]) == 2
    assert ttsops_main(["serve", "--model", str(garbage), "--port", str(free_port())]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ttsops: error:")]
    assert lines[0] == f"ttsops: error: model source {tmp_path / 'nope.pt'}: no such file or directory"
    assert lines[1].startswith(f"ttsops: error: cannot read checkpoint {garbage}")
    assert lines[2].startswith("ttsops: error: no model: give --model")
    assert lines[3].startswith(f"ttsops: error: cannot read checkpoint {garbage}")


@pytest.mark.slow
def test_serve_cli_in_a_subprocess_answers_and_stops_on_sigint(tiny_checkpoint, tmp_path):
    port = free_port()
    env = {**os.environ, "TTSOPS_API_TOKEN": "tok", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ttsops", "serve", "--model", f"voice={tiny_checkpoint}", "--port", str(port),
           "--threads", "1", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ttsops serve did not become ready"
            time.sleep(0.2)
        headers = {"Authorization": "Bearer tok"}
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/tts",
            json={"text": "Over a real socket."},
            headers=headers,
            timeout=60,
        )
        denied = httpx.post(f"http://127.0.0.1:{port}/v1/tts", json={"text": "no token"})
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert _plausible(resp) and resp.headers["x-model"] == "voice"
    assert denied.status_code == 401
    assert code == 0


def test_tiny_checkpoint_is_what_train_py_writes(tiny_checkpoint: Path):
    from ttsops.model.checkpoint import load_checkpoint

    state = load_checkpoint(tiny_checkpoint)
    assert state["hparams"]["max_decoder_steps"] == TINY["max_decoder_steps"] and "model" in state
