"""The inference service: ``create_app(settings, synthesizer_loader) -> FastAPI``.

Routes: ``POST /v1/tts`` ({text, model?} -> audio/wav), OpenAI-compatible ``POST /v1/audio/speech``
({model, input, voice?, response_format "wav"}), ``GET /v1/models``, ``/healthz``, ``/readyz``,
``/metrics`` (Prometheus, a registry per app) and a small page at ``/``.

Inference runs in plain ``def`` endpoints (Starlette's threadpool) with no lock: torch modules in
eval mode take concurrent forwards, and each request uses the model it picked from the store, so
an alias move swaps models without stopping requests in flight. Bad input is a 4xx with a
message, never a 500: wrong types, empty text or text with nothing to say 422, bad JSON 400,
unknown model 404, text or body over the limits 413, missing or wrong bearer token 401. Every error
body is ``schemas.ErrorBody`` and ``/openapi.json`` declares each status a route can answer
(``schemas.py``; tests/integration/serve/test_contract.py fuzzes it with schemathesis).
"""

from __future__ import annotations

import hmac
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttsops.audio.io import wav_bytes
from ttsops.errors import ServeError
from ttsops.serve.loader import LoadedModel, ModelResolver, ModelSource, ModelStore, SynthesizerLoader
from ttsops.serve.schemas import (
    AUDIO_RESPONSE,
    FieldError,
    Health,
    ModelInfo,
    ModelList,
    Readiness,
    SpeechRequest,
    TtsRequest,
    error_response,
    error_responses,
    request_models,
)

logger = logging.getLogger(__name__)


class ServeSettings(BaseModel):
    """Everything the service is configured with (the CLI builds it from flags and the config)."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(min_length=1)  # public name -> source (path or models:/...)
    tracking_uri: str | None = None
    max_text_chars: int = Field(500, ge=1)
    max_body_bytes: int = Field(16_384, ge=256)
    api_token: str | None = Field(None, repr=False)
    reload_interval_s: float | None = Field(30.0, gt=0)  # None: never poll the registry
    cache_dir: Path | None = None  # registry downloads; None: a temp dir removed at shutdown


# --- metrics -------------------------------------------------------------------------------------
class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("ttsops_http_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram("ttsops_http_request_seconds", "request latency", ["path"], registry=r)
        self.synthesis = Histogram(
            "ttsops_synthesis_seconds",
            "text -> waveform time",
            ["model"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.audio = Counter("ttsops_audio_seconds", "seconds of audio produced", ["model"], registry=r)
        self.inflight = Gauge("ttsops_inflight_synthesis", "syntheses running now", registry=r)
        self.model_info = Gauge(
            "ttsops_model_info", "served model versions", ["model", "version"], registry=r
        )
        self.reloads = Counter("ttsops_model_reloads", "alias-move reloads", ["model", "outcome"], registry=r)

    def set_models(self, models: dict[str, LoadedModel]) -> None:
        self.model_info.clear()
        for m in models.values():
            self.model_info.labels(m.name, m.version or "file").set(1)


_KNOWN_PATHS = {"/", "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/tts", "/v1/audio/speech"}


class _Edge:
    """Pure ASGI middleware: body-size limit (413) and request metrics."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        started, status = time.perf_counter(), [500]
        length = dict(scope["headers"]).get(b"content-length")
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max:  # a chunked body that outgrew the limit
                raise HTTPException(413, f"request body over the {self.max}-byte limit")
            return msg

        async def send_status(msg: MutableMapping[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            # only POST routes read a body: a GET's Content-Length is left to the route (it ignores it)
            if scope["method"] == "POST" and length is not None and length.isdigit() and int(length) > self.max:
                detail = f"request body of {int(length)} bytes is over the {self.max}-byte limit"
                await error_response(413, detail)(scope, receive, send_status)
            else:
                await self.app(scope, limited_receive, send_status)
        finally:
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


_TEXT_FIELDS = {("body", "text"), ("body", "input")}


def _problem(e: Any) -> str:
    """One validation error as ``field: message``."""
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
    msg = e.get("msg", "invalid")
    if e.get("type") in ("model_attributes_type", "dict_type") and loc == "body":
        msg = "must be a JSON object (send Content-Type: application/json)"
    if e.get("type") == "string_too_long" and tuple(e.get("loc", ())) in _TEXT_FIELDS:
        return f"{loc} has {len(e['input'])} characters; the limit is {e['ctx']['max_length']}"
    return f"{loc}: {msg}"


def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Bad JSON 400; text over the limit 413 (as a body over the limit is); anything else 422."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "request body is not valid JSON")
    fields = [FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg")), type=str(e.get("type"))) for e in errors]
    too_long = any(f.type == "string_too_long" and tuple(f.loc) in _TEXT_FIELDS for f in fields)
    return error_response(413 if too_long else 422, "; ".join(_problem(e) for e in errors), fields)


def _http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Our HTTPExceptions and Starlette's own (404 for an unknown path, 405 with Allow)."""
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the ErrorBody every other error has (uvicorn still logs the traceback)."""
    return error_response(500, f"internal error ({type(exc).__name__}); the service log has the details")


_BEARER = HTTPBearer(auto_error=False, description="the service's --token ($TTSOPS_API_TOKEN)")


# --- the app -------------------------------------------------------------------------------------
class _Service:
    """What the routes share: settings, metrics and the model store (set while the app runs)."""

    def __init__(self, settings: ServeSettings, loader: SynthesizerLoader) -> None:
        self.settings, self.loader = settings, loader
        self.sources = {name: ModelSource.parse(src) for name, src in settings.models.items()}
        self.metrics = Metrics()
        self.store: ModelStore | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        from anyio import to_thread

        cache = self.settings.cache_dir or Path(tempfile.mkdtemp(prefix="ttsops-serve-"))
        store = ModelStore(
            self.sources, ModelResolver(self.settings.tracking_uri, cache), self.loader, self._on_reload
        )
        try:
            await to_thread.run_sync(store.load_all)
        except Exception as e:  # the CLI reports it as one line after uvicorn gives up
            app.state.startup_error = e
            raise
        self.metrics.set_models(store.models)
        self.store = store
        if self.settings.reload_interval_s:
            store.start_polling(self.settings.reload_interval_s)
        try:
            yield
        finally:
            self.store = None
            store.stop()
            if self.settings.cache_dir is None:
                shutil.rmtree(cache, ignore_errors=True)

    def _on_reload(self, name: str, outcome: str) -> None:
        self.metrics.reloads.labels(name, outcome).inc()
        if self.store is not None:
            self.metrics.set_models(self.store.models)

    def check_token(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        token = self.settings.api_token
        if token is None:
            return
        given = credentials.credentials.strip() if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def models(self) -> dict[str, LoadedModel]:
        if self.store is None:
            raise HTTPException(503, "models are not loaded yet")
        return self.store.models  # one read: a concurrent swap cannot change what this request uses

    def synthesize(self, name: str | None, text: str) -> Response:
        models = self.models()
        model = models.get(name) if name is not None else next(iter(models.values()))
        if model is None:
            raise HTTPException(404, f"model {name!r} not found (available: {', '.join(models)})")
        self.metrics.inflight.inc()
        started = time.perf_counter()
        try:
            wav, sr = model.synthesizer.synthesize(text)
        except (ValueError, ServeError) as e:  # e.g. nothing speakable left after cleaning
            raise HTTPException(422, f"cannot synthesise this text: {e}") from None
        finally:
            self.metrics.inflight.dec()
        took, seconds = time.perf_counter() - started, len(wav) / sr
        self.metrics.synthesis.labels(model.name).observe(took)
        self.metrics.audio.labels(model.name).inc(seconds)
        headers = {
            "X-Model": model.name,
            "X-Model-Version": model.version or "file",
            "X-Audio-Seconds": f"{seconds:.3f}",
            "X-Synthesis-Seconds": f"{took:.3f}",
        }
        return Response(wav_bytes(wav, sr), media_type="audio/wav", headers=headers)

    def model_list(self) -> ModelList:
        data = [
            ModelInfo(
                id=m.name,
                created=int(m.loaded_at),
                source=m.source.raw,
                version=m.version,
                sample_rate=m.sample_rate,
            )
            for m in self.models().values()
        ]
        return ModelList(data=data)


def create_app(settings: ServeSettings, synthesizer_loader: SynthesizerLoader) -> FastAPI:
    """Build the service; models load in the lifespan (startup fails if one cannot be loaded)."""
    svc = _Service(settings, synthesizer_loader)
    app = FastAPI(title="ttsops inference", lifespan=svc.lifespan, version="1")
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_handler)
    app.add_middleware(_Edge, max_body_bytes=settings.max_body_bytes, metrics=svc.metrics)
    _add_probes(app, svc)
    _add_api(app, svc)
    return app


def _add_probes(app: FastAPI, svc: _Service) -> None:
    """The page, health, readiness and metrics: no token, no body."""
    page = resources.files("ttsops.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, summary="a page to type text and hear it")
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    def healthz() -> Health:
        return Health()

    @app.get("/readyz", responses=error_responses(503))
    def readyz() -> Readiness:
        return Readiness(models=list(svc.models()))  # 503 until the lifespan has loaded them

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_api(app: FastAPI, svc: _Service) -> None:
    """/v1: behind the bearer token when the service has one (and only then declared so)."""
    settings = svc.settings
    guarded = [Depends(svc.check_token)] if settings.api_token is not None else []
    auth = (401,) if guarded else ()
    tts_model, speech_model = request_models(settings.max_text_chars, list(settings.models))
    synthesis = {**AUDIO_RESPONSE, **error_responses(400, *auth, 404, 413, 422, 500, 503)}

    @app.get("/v1/models", dependencies=guarded, responses=error_responses(*auth, 503))
    def list_models() -> ModelList:
        return svc.model_list()

    def tts(req: TtsRequest) -> Response:
        return svc.synthesize(req.model, req.text)

    def speech(req: SpeechRequest) -> Response:
        return svc.synthesize(req.model, req.input)

    # FastAPI reads the body model from the annotation: this app's models, with its limits
    tts.__annotations__["req"], speech.__annotations__["req"] = tts_model, speech_model
    for path, endpoint, summary in [
        ("/v1/tts", tts, "text -> WAV"),
        ("/v1/audio/speech", speech, "OpenAI-compatible text -> WAV"),
    ]:
        app.add_api_route(path, cast(Callable[..., Response], endpoint), methods=["POST"],
                          dependencies=guarded, response_class=Response, responses=synthesis, summary=summary)
