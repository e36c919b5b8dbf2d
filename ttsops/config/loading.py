"""Reading a config: ``load_config(path, overrides)`` reads YAML, applies dotted ``key=value``
overrides (OmegaConf style: ``optimization.sampler=cma_es``), resolves ``${VAR}`` and
``${oc.env:VAR}`` from the environment, and validates with pydantic; ``dump_config`` writes the
resolved config back with its secrets masked."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from pydantic import ValidationError

from ttsops.config.schema import TunerConfig
from ttsops.errors import ConfigError

_ENV_REF = re.compile(r"\$\{(?:oc\.env:)?([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")


def _resolve_env(value: Any, key: str, source: str) -> Any:
    """Replace ``${VAR}`` / ``${oc.env:VAR[,default]}`` with the environment's value.

    An unset variable with no default resolves to None when it is the whole value (an optional
    channel stays off), and is an error when embedded in a longer string.
    """
    if isinstance(value, dict):
        return {k: _resolve_env(v, f"{key}.{k}" if key else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _ENV_REF.fullmatch(value)
    if whole:
        return os.environ.get(whole.group(1), whole.group(2))

    def sub(m: re.Match[str]) -> str:
        got = os.environ.get(m.group(1), m.group(2))
        if got is None:
            raise ConfigError(f"{source}: {key}: environment variable {m.group(1)} is not set")
        return got

    return _ENV_REF.sub(sub, value)


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """``key.path=value`` overrides (OmegaConf dot-list) merged into ``data``; a malformed one is a ConfigError."""
    if not overrides:
        return data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optimization.sampler=tpe)")
    try:
        merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]
    except Exception as e:  # omegaconf raises many types; all mean a malformed override
        raise ConfigError(f"{source}: bad override: {e}".splitlines()[0]) from e


def _format_error(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    if err["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key{_valid_keys(err['loc'])}"
    return f"{source}: {key}: {err['msg']} (got {err.get('input')!r})"


def _valid_keys(loc: tuple[Any, ...]) -> str:
    model: Any = TunerConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return ""
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return f" (valid: {', '.join(fields)})" if fields else ""


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> TunerConfig:
    try:
        return TunerConfig.model_validate(_resolve_env(data or {}, "", source))
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TunerConfig:
    """Read and validate a config file; ``None`` means all defaults (overrides still apply)."""
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (offset {e.start}): is it a YAML file?") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return parse_config(apply_overrides(data, overrides or [], source), source)


def dump_config(cfg: TunerConfig) -> str:
    """YAML of the resolved config, secrets masked (safe for MLflow artifacts and logs)."""
    data = cfg.model_dump(mode="json")
    alerts = data["monitoring"]["alerts"]
    for k in ("slack_webhook", "webhook_url"):
        if alerts.get(k):
            alerts[k] = "***"
    for sub, k in (("telegram", "bot_token"), ("smtp", "password")):
        if alerts[sub].get(k):
            alerts[sub][k] = "***"
    text: str = yaml.safe_dump(data, sort_keys=False)
    return text
