"""The HTTP contract: /openapi.json declares every status each route answers, with the body it
really sends (one ErrorBody for every error), and the request limits the service enforces.

schemathesis (every check, 100 examples per operation, derandomised) fuzzes a real uvicorn serving
the real tiny Tacotron2 behind a bearer token. A table of hand-made requests then reaches every
declared status, including those fuzzing cannot (a body over the byte limit, a model that refuses
or fails, models not loaded yet), and checks each answer against the document with schemathesis'
conformance checks: what the service returns is declared, and what is declared is returned."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.serve.serve_helpers import SR, SineSynthesizer
from ttsops.errors import ServeError
from ttsops.serve.app import ServeSettings, create_app
from ttsops.serve.loader import default_synthesizer_loader

ST_CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "contract-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALL_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
    "positive_data_acceptance", "missing_required_header", "unsupported_method", "allow_header_conformance",
    "use_after_free", "ensure_resource_availability", "ignored_auth", "object_level_authorization",
}


def _scenarios(ndjson: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in ndjson.read_text().splitlines() if line.strip()]
    return [e["ScenarioFinished"] for e in events if "ScenarioFinished" in e]


@pytest.mark.slow
def test_schemathesis_with_every_check_finds_no_failure(serve, tiny_checkpoint, tmp_path):
    events = tmp_path / "events.ndjson"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ST_CONFIG), "--no-color", "run",
           "--checks", "all", "-H", f"Authorization: Bearer {TOKEN}", "--report", "ndjson",
           "--report-ndjson-path", str(events)]
    with serve({"tiny": str(tiny_checkpoint)}, default_synthesizer_loader("cpu"), api_token=TOKEN) as url:
        proc = subprocess.run([*cmd, f"{url}/openapi.json"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    fuzzed: Counter[str] = Counter()
    cases: Counter[str] = Counter()
    checks: set[str] = set()
    for s in _scenarios(events):
        rec = s["recorder"]
        cases[rec["label"]] += len(rec.get("cases", {}))
        if s["phase"] == "fuzzing":
            fuzzed[rec["label"]] += len(rec.get("cases", {}))
        checks |= {c["name"] for results in rec.get("checks", {}).values() for c in results}
    summary = f"schemathesis: {len(cases)} operations, {sum(cases.values())} cases {dict(cases)}, fuzzing {dict(fuzzed)}"
    print(summary)
    assert len(cases) == 7, summary
    assert fuzzed["POST /v1/tts"] >= 100 and fuzzed["POST /v1/audio/speech"] >= 100, summary
    assert checks >= ALL_CHECKS, f"checks that never ran: {ALL_CHECKS - checks}"


class _Refusing:
    """Stands in for a model that cannot say a text (ServeError) or breaks (any other error)."""

    sample_rate = SR

    def __init__(self, error: Exception) -> None:
        self.error = error

    def synthesize(self, text: str) -> Any:
        raise self.error


def _loader(path: Path) -> Any:
    kind = json.loads(path.read_text())["kind"]
    if kind == "sine":
        return SineSynthesizer(220.0)
    return _Refusing(ServeError("nothing to say") if kind == "mute" else RuntimeError("boom"))


def _models(tmp_path: Path) -> dict[str, str]:
    models = {}
    for kind in ("sine", "mute", "broken"):
        (tmp_path / f"{kind}.pt").write_text(json.dumps({"kind": kind}))
        models[kind] = str(tmp_path / f"{kind}.pt")
    return models


def _json(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {**AUTH, "content-type": "application/json"}}


TTS, SPEECH = "/v1/tts", "/v1/audio/speech"
_SPEAK = {"model": "sine", "input": "hello"}
# (method, path, httpx keyword arguments, status): every status each route declares
OVER_HTTP: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/", {}, 200),
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/v1/models", {"headers": AUTH}, 200),
    ("GET", "/v1/models", {}, 401),
    ("POST", TTS, {"json": {"text": "Hello there."}, "headers": AUTH}, 200),
    ("POST", TTS, _json(b'{"text": "unterminated'), 400),
    ("POST", TTS, {"json": {"text": "hi"}, "headers": {"Authorization": "Bearer wrong"}}, 401),
    ("POST", TTS, {"json": {"text": "hi", "model": ""}, "headers": AUTH}, 404),  # not the default model
    ("POST", TTS, {"json": {"text": "x" * 201}, "headers": AUTH}, 413),
    ("POST", TTS, _json(b'{"text": "' + b"a" * 5000 + b'"}'), 413),
    ("POST", TTS, {"json": {"text": "?!"}, "headers": AUTH}, 422),
    ("POST", TTS, {"content": b"hello", "headers": {**AUTH, "content-type": "text/plain"}}, 422),
    ("POST", TTS, {"json": {"text": "hi", "model": "mute"}, "headers": AUTH}, 422),
    ("POST", TTS, {"json": {"text": "hi", "model": "broken"}, "headers": AUTH}, 500),
    ("POST", SPEECH, {"json": _SPEAK, "headers": AUTH}, 200),
    ("POST", SPEECH, _json(b"\x00"), 400),
    ("POST", SPEECH, {"json": _SPEAK}, 401),
    ("POST", SPEECH, {"json": {**_SPEAK, "model": "tts-1"}, "headers": AUTH}, 404),
    ("POST", SPEECH, {"json": {**_SPEAK, "input": "y" * 201}, "headers": AUTH}, 413),
    ("POST", SPEECH, {"content": iter([b'{"input": "', b"a" * 5000, b'"}']), "headers": AUTH}, 413),
    ("POST", SPEECH, {"json": {**_SPEAK, "speed": True}, "headers": AUTH}, 422),
    ("POST", SPEECH, {"json": {**_SPEAK, "model": "mute"}, "headers": AUTH}, 422),
    ("POST", SPEECH, {"json": {**_SPEAK, "model": "broken"}, "headers": AUTH}, 500),
]
# models not loaded yet: only an app served without its lifespan (ASGI, in-process) shows it
NOT_LOADED = [
    ("GET", "/readyz", {}, 503),
    ("GET", "/v1/models", {"headers": AUTH}, 503),
    ("POST", TTS, {"json": {"text": "hi"}, "headers": AUTH}, 503),
    ("POST", SPEECH, {"json": _SPEAK, "headers": AUTH}, 503),
]
CONFORMANCE = [status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]


def _readable(resp: httpx.Response) -> httpx.Response:
    """schemathesis reads the request's body: a streamed (chunked) one is gone, so give it none."""
    try:
        _ = resp.request.content
    except httpx.RequestNotRead:
        req = httpx.Request(resp.request.method, resp.request.url, headers=resp.request.headers)
        copy = httpx.Response(resp.status_code, headers=resp.headers, content=resp.content, request=req)
        copy.elapsed = resp.elapsed
        return copy
    return resp


async def _without_lifespan(app: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ttsops") as client:
        return [await client.request(m, path, **kw) for m, path, kw, _ in NOT_LOADED]


def test_every_status_is_declared_with_the_body_it_sends(serve, tmp_path):
    models = _models(tmp_path)
    limits = {"max_text_chars": 200, "max_body_bytes": 4096, "api_token": TOKEN}
    with serve(models, _loader, **limits) as url, httpx.Client(base_url=url, timeout=30) as client:
        doc = client.get("/openapi.json").json()
        answers = [client.request(m, path, **kw) for m, path, kw, _ in OVER_HTTP]
        unknown = [client.get("/nowhere"), client.put(TTS, headers=AUTH)]
    cold = create_app(ServeSettings(models=models, cache_dir=tmp_path / "cold", **limits), _loader)
    answers += asyncio.run(_without_lifespan(cold))
    schema = schemathesis.openapi.from_dict(doc)
    for (method, path, kw, status), resp in zip(OVER_HTTP + NOT_LOADED, answers, strict=True):
        case = f"{method} {path} {str(kw)[:80]}"
        assert resp.status_code == status, f"{case}: {resp.status_code} {resp.text[:300]}"
        schema[path][method].Case().validate_response(_readable(resp), checks=CONFORMANCE)  # raises on a mismatch
        if status >= 400:
            assert set(resp.json()) <= {"detail", "errors"} and resp.json()["detail"], case
    declared = {(m.upper(), p, int(s)) for p, ops in doc["paths"].items() for m, op in ops.items()
                for s in op["responses"]}
    assert declared == {(m, p, s) for m, p, _, s in OVER_HTTP + NOT_LOADED}  # no status declared in vain
    assert [r.json() for r in unknown] == [{"detail": "Not Found"}, {"detail": "Method Not Allowed"}]
    assert unknown[1].headers["allow"] == "POST"


def test_the_document_states_the_limits_and_declares_401_only_with_a_token(tmp_path):
    models = {"a": str(tmp_path), "b": str(tmp_path)}
    open_doc = create_app(ServeSettings(models=models, max_text_chars=42), _loader).openapi()
    guarded_doc = create_app(ServeSettings(models=models, api_token=TOKEN), _loader).openapi()
    text = open_doc["components"]["schemas"]["TtsRequest"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 42) and "pattern" in text
    speech = open_doc["components"]["schemas"]["SpeechRequest"]["properties"]
    assert speech["model"]["enum"] == ["a", "b"] and (speech["speed"]["minimum"], speech["speed"]["maximum"]) == (1, 1)
    for doc, guarded in ((open_doc, False), (guarded_doc, True)):
        for path in ("/v1/models", TTS, SPEECH):
            op = next(iter(doc["paths"][path].values()))
            assert ("401" in op["responses"]) is guarded and ("security" in op) is guarded, path
    assert "HTTPValidationError" not in json.dumps(open_doc)  # FastAPI's default 422 body is not ours
