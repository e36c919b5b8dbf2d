"""The inference service over real HTTP (uvicorn on 127.0.0.1), with a test-only sine synthesizer
behind it: formats, every kind of bad request, auth, metrics and concurrency."""

from __future__ import annotations

import io

import httpx
import pytest
import soundfile as sf

from tests.integration.serve.serve_helpers import (
    SECONDS_PER_CHAR,
    SR,
    SineLoader,
    post_all_at_once,
    write_sine_checkpoint,
)


@pytest.fixture
def sine_ckpt(tmp_path):
    return write_sine_checkpoint(tmp_path / "voice.pt", 220.0)


def _wav(resp: httpx.Response) -> tuple[float, int]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(resp.content), dtype="float32")
    return len(data) / sr, sr


def test_tts_returns_wav_whose_length_follows_the_text(serve, sine_ckpt):
    text = "Printing, in the only sense with which we are at present concerned."
    with serve({"voice": str(sine_ckpt)}, SineLoader()) as url:
        resp = httpx.post(f"{url}/v1/tts", json={"text": text})
    seconds, sr = _wav(resp)
    assert sr == SR
    assert seconds == pytest.approx(len(text) * SECONDS_PER_CHAR, abs=1e-3)
    assert resp.headers["x-model"] == "voice" and resp.headers["x-model-version"] == "file"
    assert float(resp.headers["x-audio-seconds"]) == pytest.approx(seconds, abs=1e-3)


def test_openai_compatible_speech_endpoint(serve, sine_ckpt):
    with serve({"voice": str(sine_ckpt)}, SineLoader()) as url:
        resp = httpx.post(
            f"{url}/v1/audio/speech",
            json={"model": "voice", "input": "Hello there.", "voice": "alloy", "response_format": "wav"},
        )
        models = httpx.get(f"{url}/v1/models").json()
    seconds, _ = _wav(resp)
    assert seconds == pytest.approx(len("Hello there.") * SECONDS_PER_CHAR, abs=1e-3)
    assert models["object"] == "list"
    (entry,) = models["data"]
    assert entry["id"] == "voice" and entry["object"] == "model" and entry["sample_rate"] == SR


BAD_REQUESTS = [
    # (path, kwargs for httpx.post, status, text in detail)
    ("/v1/tts", {"json": {"text": ""}}, 422, "text: String should have at least 1 character"),
    ("/v1/tts", {"json": {"text": "   \n "}}, 422, "text: Value error, must contain some text"),
    ("/v1/tts", {"json": {}}, 422, "text: Field required"),
    ("/v1/tts", {"json": {"text": 42}}, 422, "text: Input should be a valid string"),
    ("/v1/tts", {"json": {"text": ["a"]}}, 422, "text: Input should be a valid string"),
    ("/v1/tts", {"json": {"text": "hi", "speaker": 3}}, 422, "speaker: Extra inputs are not permitted"),
    ("/v1/tts", {"json": ["hello"]}, 422, "body: must be a JSON object"),
    (
        "/v1/tts",
        {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "/v1/tts",
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        422,
        "must be a JSON object",
    ),
    ("/v1/tts", {"json": {"text": "hi", "model": "nope"}}, 404, "model 'nope' not found (available: voice)"),
    ("/v1/tts", {"json": {"text": "x" * 201}}, 413, "text has 201 characters; the limit is 200"),
    ("/v1/tts", {"json": {"text": "!!! ???"}}, 422, "text: Value error, must contain some text to speak"),
    (
        "/v1/tts",
        {"content": b"{" + b" " * 5000 + b"}", "headers": {"content-type": "application/json"}},
        413,
        "request body of 5002 bytes is over the 4096-byte limit",
    ),
    (
        "/v1/tts",
        {
            "content": iter([b'{"text": "', b"a" * 3000, b"a" * 3000, b'"}']),
            "headers": {"content-type": "application/json"},
        },
        413,
        "over the 4096-byte limit",
    ),
    ("/v1/audio/speech", {"json": {"input": "hi"}}, 422, "model: Field required"),
    (
        "/v1/audio/speech",
        {"json": {"model": "voice", "input": ""}},
        422,
        "input: String should have at least",
    ),
    (
        "/v1/audio/speech",
        {"json": {"model": "voice", "input": "hi", "response_format": "mp3"}},
        422,
        "response_format: Input should be 'wav'",
    ),
    ("/v1/audio/speech", {"json": {"model": "voice", "input": "hi", "speed": 2}}, 422, "only speed 1.0"),
    ("/v1/audio/speech", {"json": {"model": "tts-1", "input": "hi"}}, 404, "model 'tts-1' not found"),
    ("/v1/nothing", {"json": {}}, 404, "Not Found"),
]


def test_each_bad_request_gets_the_right_4xx_with_a_message(serve, sine_ckpt):
    with serve({"voice": str(sine_ckpt)}, SineLoader(), max_text_chars=200, max_body_bytes=4096) as url:
        with httpx.Client(base_url=url) as client:
            results = [
                (path, kw, status, want, client.post(path, **kw)) for path, kw, status, want in BAD_REQUESTS
            ]
            assert client.post("/v1/tts", json={"text": "still fine"}).status_code == 200
    for path, kw, status, want, resp in results:
        case = f"{path} {kw}"[:120]
        assert resp.status_code == status, f"{case}: {resp.status_code} {resp.text}"
        assert want in resp.json()["detail"], f"{case}: {resp.text}"


def test_bearer_token_guards_the_api_but_not_health(serve, sine_ckpt):
    with serve({"voice": str(sine_ckpt)}, SineLoader(), api_token="s3cret-token") as url:
        none = httpx.post(f"{url}/v1/tts", json={"text": "hi"})
        wrong = httpx.post(f"{url}/v1/tts", json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
        basic = httpx.get(f"{url}/v1/models", headers={"Authorization": "Basic s3cret-token"})
        right = httpx.post(
            f"{url}/v1/tts", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret-token"}
        )
        health, page = httpx.get(f"{url}/healthz"), httpx.get(f"{url}/")
    for resp in (none, wrong, basic):
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["detail"] == "missing or wrong bearer token"
    assert right.status_code == 200
    assert health.status_code == 200 and page.status_code == 200


def test_health_ready_and_prometheus_metrics(serve, sine_ckpt):
    with serve({"voice": str(sine_ckpt)}, SineLoader()) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "models": ["voice"]}
        httpx.post(f"{url}/v1/tts", json={"text": "one two three"})
        httpx.post(f"{url}/v1/tts", json={"text": ""})
        metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    body = metrics.text
    assert 'ttsops_http_requests_total{path="/v1/tts",status="200"} 1.0' in body
    assert 'ttsops_http_requests_total{path="/v1/tts",status="422"} 1.0' in body
    assert 'ttsops_synthesis_seconds_count{model="voice"} 1.0' in body
    assert f'ttsops_audio_seconds_total{{model="voice"}} {13 * SECONDS_PER_CHAR}' in body
    assert 'ttsops_model_info{model="voice",version="file"} 1.0' in body


def test_two_apps_keep_separate_metrics(serve, sine_ckpt):
    with (
        serve({"voice": str(sine_ckpt)}, SineLoader()) as a,
        serve({"voice": str(sine_ckpt)}, SineLoader()) as b,
    ):
        httpx.post(f"{a}/v1/tts", json={"text": "only on a"})
        assert 'path="/v1/tts"' in httpx.get(f"{a}/metrics").text
        assert 'path="/v1/tts"' not in httpx.get(f"{b}/metrics").text


def test_eight_concurrent_clients_all_succeed_in_parallel(serve, sine_ckpt):
    loader = SineLoader(delay_s=0.3)
    texts = [f"Client number {i} says" + " hello" * i for i in range(8)]
    with serve({"voice": str(sine_ckpt)}, loader) as url:
        results = post_all_at_once(url, texts, timeout=60)
    for text, resp in zip(texts, results, strict=True):
        assert isinstance(resp, httpx.Response), resp
        seconds, _ = _wav(resp)
        assert seconds == pytest.approx(len(text) * SECONDS_PER_CHAR, abs=1e-3)  # each got its own audio
    (synth,) = loader.loaded
    assert synth.calls == 8
    assert synth.max_running >= 4  # no global lock serialises the requests


def test_several_models_by_name(serve, tmp_path):
    low = write_sine_checkpoint(tmp_path / "low.pt", 110.0)
    high = write_sine_checkpoint(tmp_path / "high.pt", 880.0)
    loader = SineLoader()
    with serve({"low": str(low), "high": str(high)}, loader) as url:
        default = httpx.post(f"{url}/v1/tts", json={"text": "hi"})
        chosen = httpx.post(f"{url}/v1/tts", json={"text": "hi", "model": "high"})
        ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    assert default.headers["x-model"] == "low" and chosen.headers["x-model"] == "high"
    assert ids == ["low", "high"]


def test_page_is_served(serve, sine_ckpt):
    with serve({"voice": str(sine_ckpt)}, SineLoader()) as url:
        page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<textarea id="text"' in page.text and '<audio id="player"' in page.text
