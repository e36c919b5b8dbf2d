"""The service's HTTP contract: request bodies, response bodies, the one error body, and what each
route declares in ``/openapi.json``.

Request models are made per app (``request_models``): the text limit and the model names are the
app's settings, so the schema states them (``maxLength``, ``enum``) and pydantic enforces the same.
Every error response, whatever its status, is an ``ErrorBody``: ``{"detail": "one line"}``, plus
``errors`` (one entry per field) when the request did not validate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from ttsops.text.cleaners import SPEAKABLE_PATTERN


class _Body(BaseModel):
    """A response body: exactly these fields (``additionalProperties: false`` in the schema)."""

    model_config = ConfigDict(extra="forbid")


# --- errors --------------------------------------------------------------------------------------
class FieldError(_Body):
    loc: list[str | int] = Field(description='where: ["body", "text"]')
    msg: str
    type: str = Field(description="pydantic's error type, e.g. string_too_long")


class ErrorBody(_Body):
    """The body of every error response (4xx and 5xx)."""

    detail: str = Field(description="what went wrong, in one line")
    errors: list[FieldError] | None = Field(
        None, description="only when the request did not validate: one entry per problem"
    )


def error_response(status: int, detail: str, errors: list[FieldError] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, errors=errors).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status, headers=headers)


_ERRORS: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "Missing or wrong bearer token.",
    404: "No served model has that name (the detail lists the names).",
    413: "The body is over the byte limit, or the text over the character limit (maxLength).",
    422: "The request does not validate (`errors` names each field), or the model found nothing to "
    "say in the text after normalisation.",
    500: "Synthesis failed unexpectedly: a bug (the service's log has the traceback).",
    503: "Models are not loaded yet.",
}
_HEADER = {"schema": {"type": "string"}, "required": True}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its ``ErrorBody`` and why it happens."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": ErrorBody, "description": _ERRORS[status]}
        if status == 401:
            out[status]["headers"] = {"WWW-Authenticate": {**_HEADER, "description": "Bearer"}}
    return out


AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "16-bit PCM WAV, mono, at the model's sample rate.",
        "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Model": {**_HEADER, "description": "the model that spoke"},
            "X-Model-Version": {**_HEADER, "description": "its registry version, or `file`"},
            "X-Audio-Seconds": {**_HEADER, "description": "length of the audio, seconds"},
            "X-Synthesis-Seconds": {**_HEADER, "description": "time spent synthesising, seconds"},
        },
    }
}


# --- responses -----------------------------------------------------------------------------------
class Health(_Body):
    status: Literal["ok"] = "ok"


class Readiness(_Body):
    status: Literal["ready"] = "ready"
    models: list[str] = Field(description="the served model names")


class ModelInfo(_Body):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when it was loaded, Unix seconds")
    owned_by: Literal["ttsops"] = "ttsops"
    source: str = Field(description="checkpoint path or models:/NAME@ALIAS")
    version: str | None = Field(description="registry version; null for a file")
    sample_rate: int


class ModelList(_Body):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


# --- requests ------------------------------------------------------------------------------------
_SPEAKABLE = re.compile(SPEAKABLE_PATTERN)


def _speakable(v: str) -> str:
    if not _SPEAKABLE.search(v):
        raise ValueError("must contain some text to speak: a letter or a digit (A-Z, 0-9 or a Latin letter)")
    return v.strip()


def _only_normal_speed(v: float) -> float:
    if v != 1.0:
        raise ValueError(f"only speed 1.0 is supported, got {v}")
    return v


class TtsRequest(BaseModel):
    """``POST /v1/tts``. ``request_models`` gives the app's own, with its limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    model: str | None = Field(None, description="a name from /v1/models; default: the first")


class SpeechRequest(BaseModel):
    """OpenAI ``audio.speech.create``. One speaker: ``voice`` is accepted (clients always send
    one) and ignored; ``speed`` must be 1.0; only ``wav`` is produced; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    input: str
    voice: str | None = Field(None, description="ignored: every model has one speaker")
    response_format: Literal["wav"] = "wav"
    speed: Annotated[
        float, Field(json_schema_extra={"minimum": 1.0, "maximum": 1.0}), AfterValidator(_only_normal_speed)
    ] = 1.0


def request_models(max_text_chars: int, model_names: Sequence[str]) -> tuple[type[TtsRequest], type[SpeechRequest]]:
    """The request models of one app: text of 1..``max_text_chars`` characters with something to say
    (``SPEAKABLE_PATTERN``), returned stripped; ``model`` one of ``model_names``, though an unknown
    name is a 404 from the service (OpenAI's answer), not a validation error."""
    text = Annotated[
        str,
        Field(
            min_length=1,
            max_length=max_text_chars,
            json_schema_extra={"pattern": SPEAKABLE_PATTERN},
            description="what to say: at least one letter or digit; English normalisation is applied",
        ),
        AfterValidator(_speakable),
    ]
    name = Annotated[str, Field(json_schema_extra={"enum": list(model_names)})]
    default = Field(None, description="a name from /v1/models; default: the first")
    tts = create_model("TtsRequest", __base__=TtsRequest, text=(text, ...), model=(name | None, default))
    speech = create_model("SpeechRequest", __base__=SpeechRequest, model=(name, ...), input=(text, ...))
    return tts, speech
