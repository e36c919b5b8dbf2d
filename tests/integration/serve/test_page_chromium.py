"""The page at ``/`` in headless Chromium: type text, press Speak, get audio the browser decodes
and plays."""

from __future__ import annotations

import json

import pytest

from tests.integration.serve.serve_helpers import SECONDS_PER_CHAR, SineLoader, write_sine_checkpoint
from ttsops.serve.loader import default_synthesizer_loader

WAIT_FOR_MODELS = """
new Promise((resolve, reject) => {
  const t0 = Date.now();
  (function poll() {
    const select = document.getElementById("model");  // null while the tab still shows about:blank
    if (document.readyState === "complete" && select && select.options.length) {
      resolve(Array.from(select.options).map(o => o.value));
    } else if (Date.now() - t0 > 30000) { reject(new Error("page did not load the model list")); }
    else { setTimeout(poll, 50); }
  })();
})
"""

WAIT_FOR_AUDIO = """
new Promise((resolve, reject) => {
  const player = document.getElementById("player"), status = document.getElementById("status");
  const t0 = Date.now();
  (function poll() {
    const done = player.readyState >= 1 && isFinite(player.duration) && player.currentTime > 0;
    if (done || status.className === "error" || player.error) {
      resolve({duration: player.duration, currentTime: player.currentTime, src: player.src,
               error: player.error && player.error.code, status: status.textContent,
               statusClass: status.className});
    } else if (Date.now() - t0 > 60000) { reject(new Error("no audio after 60 s: " + status.textContent)); }
    else { setTimeout(poll, 50); }
  })();
})
"""


def _type_and_speak(chromium, session: str, text: str) -> dict:
    chromium.evaluate(session, "document.getElementById('text').select()")
    chromium.call(
        "Runtime.evaluate", {"expression": "document.getElementById('text').focus()"}, session=session
    )
    chromium.call(
        "Input.insertText", {"text": text}, session=session
    )  # replaces the selection, as typing does
    assert chromium.evaluate(session, "document.getElementById('text').value") == text
    reset = "{ const p = document.getElementById('player'); p.pause(); p.removeAttribute('src'); p.load(); }"
    chromium.evaluate(session, reset + "document.getElementById('status').textContent = ''")
    chromium.evaluate(session, "document.getElementById('speak').click()")
    return chromium.evaluate(session, WAIT_FOR_AUDIO, timeout=90)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sine", "tacotron2"])
def test_page_types_text_and_plays_the_returned_wav(serve, chromium, tmp_path, tiny_checkpoint, backend):
    text = "Hello from a headless browser."
    if backend == "sine":  # exact length: proves the page played what this request returned
        models, loader = {"voice": str(write_sine_checkpoint(tmp_path / "voice.pt", 330.0))}, SineLoader()
        expected = pytest.approx(len(text) * SECONDS_PER_CHAR, abs=0.01)
    else:  # the real Synthesizer on a tiny untrained checkpoint: at most 120 frames of audio
        models, loader = {"voice": str(tiny_checkpoint)}, default_synthesizer_loader("cpu")
        expected = pytest.approx(0.7, abs=0.7)
    with serve(models, loader) as url:
        session = chromium.open(f"{url}/")
        assert chromium.evaluate(session, WAIT_FOR_MODELS) == ["voice"]
        result = _type_and_speak(chromium, session, text)
        error = _type_and_speak(chromium, session, "   ")
    assert result["error"] is None and result["statusClass"] == "", json.dumps(result)
    assert result["src"].startswith("blob:")
    assert result["duration"] == expected
    assert result["currentTime"] > 0  # it played
    assert "s of audio from voice" in result["status"]
    assert error["statusClass"] == "error" and "Error 422" in error["status"], json.dumps(error)
    assert "must contain some text" in error["status"]
