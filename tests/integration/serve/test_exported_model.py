"""The real service serving an export of ``ttsops export`` (``--model OUT/onnx``)."""

from __future__ import annotations

import io

import httpx
import pytest
import soundfile as sf

from tests.helpers import TINY
from ttsops.errors import ServeError
from ttsops.model.export import export_model
from ttsops.model.inference import Synthesizer
from ttsops.serve.loader import ModelResolver, ModelSource, default_synthesizer_loader


def test_the_service_speaks_through_an_exported_model(serve, tiny_checkpoint, tmp_path):
    ref = Synthesizer.from_checkpoint(tiny_checkpoint)
    out = export_model(ref.model, ref.mel_config, tmp_path / "exported" / "onnx", "onnx")
    with serve({"voice": str(out)}, default_synthesizer_loader("cpu")) as url:
        resp = httpx.post(f"{url}/v1/tts", json={"text": "Served from ONNX."}, timeout=60)
        models = httpx.get(f"{url}/v1/models").json()["data"]
    assert resp.status_code == 200, resp.text
    wav, sr = sf.read(io.BytesIO(resp.content), dtype="float32")
    assert sr == 22050 and abs(wav).max() > 0.1
    assert 256 <= len(wav) <= TINY["max_decoder_steps"] * TINY["n_frames_per_step"] * 256
    assert resp.headers["x-model"] == "voice" and models[0]["id"] == "voice"


def test_a_directory_of_exports_asks_for_one_of_them(tiny_checkpoint, tmp_path):
    ref = Synthesizer.from_checkpoint(tiny_checkpoint)
    export_model(ref.model, ref.mel_config, tmp_path / "exported" / "torchscript", "torchscript")
    resolver = ModelResolver(None, tmp_path / "cache")
    with pytest.raises(ServeError, match=r"exported: holds the exports torchscript: give one of them"):
        resolver.fetch(ModelSource.parse(str(tmp_path / "exported")), None)
