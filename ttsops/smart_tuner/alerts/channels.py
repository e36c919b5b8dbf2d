"""Alert channels (Telegram, Slack, JSON webhook, e-mail) and the pieces they share: the ``Alert``
value, ``Event`` names, the secret ``Redactor`` and ``DeliveryError`` (one failed attempt).

A channel's ``send(alert)`` makes one delivery attempt and raises DeliveryError or httpx.HTTPError
on failure; retries, rate limits and threads live in ``alert_manager``.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from ttsops.config import AlertsConfig, SmtpConfig

logger = logging.getLogger(__name__)

_TELEGRAM_TEXT_LIMIT, _TELEGRAM_CAPTION_LIMIT = 4096, 1024


class Event(StrEnum):
    study_started = "study_started"
    study_finished = "study_finished"
    generation_started = "generation_started"
    generation_finished = "generation_finished"
    generation_pruned = "generation_pruned"
    new_best = "new_best"
    early_stop = "early_stop"
    crash = "crash"
    retry = "retry"
    preempted = "preempted"


@dataclass(frozen=True)
class Alert:
    event: Event
    title: str
    text: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    image_png: bytes | None = None  # alignment plot of a new best
    audio_wav: bytes | None = None  # audio sample of a new best
    level: int = logging.INFO

    @property
    def dedup_key(self) -> str:
        return f"{self.event.value}|{self.title}|{self.text}|{sorted(self.fields.items())!r}"

    def body(self) -> str:
        lines = [self.title] + ([self.text] if self.text else [])
        lines += [f"{k}: {fmt_value(v)}" for k, v in self.fields.items()]
        return "\n".join(lines)


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items())
    return str(v)


class Redactor:
    """Replaces each secret (and its URL-quoted / httpx-normalised forms) with ``***``."""

    def __init__(self, secrets: list[str | None]) -> None:
        forms: set[str] = set()
        for s in filter(None, secrets):
            forms |= {s, quote(s, safe=""), quote(s, safe="/:")}
            if "://" in s:
                forms.add(str(httpx.URL(s)))
                path = urlsplit(s).path
                if len(path) >= 8:  # a webhook's path is its secret; "/hook" is not worth it
                    forms.add(path)
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = str(text)
        for s in self._forms:
            out = out.replace(s, "***")
        return out


class RedactingFilter(logging.Filter):
    """Rewrites records of a third-party logger (httpx logs every request URL at INFO)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self._redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class DeliveryError(Exception):
    """One failed attempt; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # absent, or an HTTP date: fall back to our backoff
        return None


def _check_http(resp: httpx.Response) -> None:
    if resp.status_code == 429 or resp.status_code >= 500:
        raise DeliveryError(f"HTTP {resp.status_code}", True, _seconds(resp.headers.get("retry-after")))
    if resp.status_code >= 400:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}", retryable=False)


class TelegramChannel:
    """Bot API: ``sendMessage``; a new best adds ``sendPhoto`` (alignment) and ``sendAudio``."""

    name = "telegram"

    def __init__(self, client: httpx.Client, api_base: str, token: str, chat_id: str) -> None:
        self._client, self._chat_id = client, chat_id
        self._base = f"{api_base.rstrip('/')}/bot{token}"
        self._progress: tuple[Alert, int] | None = None  # a retry resumes after the parts already sent

    def __repr__(self) -> str:
        return f"TelegramChannel(chat_id={self._chat_id!r}, token=***)"

    def _call(self, method: str, **kw: Any) -> None:
        resp = self._client.post(f"{self._base}/{method}", **kw)
        if resp.status_code == 429:
            try:
                after = resp.json().get("parameters", {}).get("retry_after")
            except (ValueError, AttributeError):
                after = None
            raise DeliveryError("HTTP 429", True, _seconds(after))
        _check_http(resp)

    def send(self, alert: Alert) -> None:
        data = {"chat_id": self._chat_id, "caption": alert.title[:_TELEGRAM_CAPTION_LIMIT]}
        parts: list[tuple[str, dict[str, Any]]] = [
            ("sendMessage", {"json": {"chat_id": self._chat_id, "text": alert.body()[:_TELEGRAM_TEXT_LIMIT]}})
        ]
        if alert.image_png:
            parts.append(
                (
                    "sendPhoto",
                    {"data": data, "files": {"photo": ("alignment.png", alert.image_png, "image/png")}},
                )
            )
        if alert.audio_wav:
            parts.append(
                (
                    "sendAudio",
                    {"data": data, "files": {"audio": ("sample.wav", alert.audio_wav, "audio/wav")}},
                )
            )
        start = self._progress[1] if self._progress and self._progress[0] is alert else 0
        for i in range(start, len(parts)):
            self._call(parts[i][0], **parts[i][1])
            self._progress = (alert, i + 1)
        self._progress = None


class SlackChannel:
    """Incoming webhook: one JSON message (a webhook cannot upload files)."""

    name = "slack"

    def __init__(self, client: httpx.Client, webhook_url: str) -> None:
        self._client, self._url = client, webhook_url

    def __repr__(self) -> str:
        return "SlackChannel(webhook_url=***)"

    def send(self, alert: Alert) -> None:
        fields = "\n".join(f"*{k}*: {fmt_value(v)}" for k, v in alert.fields.items())
        text = (
            f"*{alert.title}*" + (f"\n{alert.text}" if alert.text else "") + (f"\n{fields}" if fields else "")
        )
        _check_http(self._client.post(self._url, json={"text": text}))


class WebhookChannel:
    """Generic JSON POST: ``{event, title, text, fields, level, has_image, has_audio, time}``."""

    name = "webhook"

    def __init__(self, client: httpx.Client, url: str, clock: Callable[[], float] = time.time) -> None:
        self._client, self._url, self._clock = client, url, clock

    def __repr__(self) -> str:
        return "WebhookChannel(url=***)"

    def send(self, alert: Alert) -> None:
        payload = {
            "event": alert.event.value,
            "title": alert.title,
            "text": alert.text,
            "fields": json.loads(json.dumps(dict(alert.fields), default=str)),
            "level": logging.getLevelName(alert.level).lower(),
            "has_image": alert.image_png is not None,
            "has_audio": alert.audio_wav is not None,
            "time": self._clock(),
        }
        _check_http(self._client.post(self._url, json=payload))


class EmailChannel:
    """SMTP with STARTTLS, implicit TLS or none; optional login; image and audio attached."""

    name = "email"

    def __init__(
        self, cfg: SmtpConfig, recipients: list[str], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._cfg, self._to = cfg, list(recipients)
        self._ctx = ssl_context or ssl.create_default_context()

    def __repr__(self) -> str:
        return f"EmailChannel(host={self._cfg.host!r}, port={self._cfg.port}, to={self._to!r}, password=***)"

    def _message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = (
            f"[ttsops] {alert.title}",
            self._cfg.sender,
            ", ".join(self._to),
        )
        msg.set_content(alert.body())
        if alert.image_png:
            msg.add_attachment(alert.image_png, maintype="image", subtype="png", filename="alignment.png")
        if alert.audio_wav:
            msg.add_attachment(alert.audio_wav, maintype="audio", subtype="wav", filename="sample.wav")
        return msg

    def send(self, alert: Alert) -> None:
        c = self._cfg
        try:
            if c.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=self._ctx)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            with smtp:
                if c.security == "starttls":
                    smtp.starttls(context=self._ctx)
                if c.username:
                    smtp.login(c.username, c.password or "")
                smtp.send_message(self._message(alert))
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(f"SMTP authentication failed ({e.smtp_code})", retryable=False) from None
        except smtplib.SMTPNotSupportedError as e:  # e.g. AUTH offered only after STARTTLS
            raise DeliveryError(f"SMTP server does not support this: {e}", retryable=False) from None
        except smtplib.SMTPResponseException as e:
            raise DeliveryError(f"SMTP {e.smtp_code}", retryable=400 <= e.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryError(f"SMTP {type(e).__name__}: {e}") from None


def build_channels(
    cfg: AlertsConfig, client: httpx.Client, ssl_context: ssl.SSLContext | None = None
) -> list[Channel]:
    """The channels ``cfg`` configures (none: the log alone)."""
    channels: list[Channel] = []
    tg = cfg.telegram
    if tg.bot_token and tg.chat_id:
        channels.append(TelegramChannel(client, tg.api_base, tg.bot_token, tg.chat_id))
    elif tg.bot_token or tg.chat_id:
        logger.warning("alerts: telegram needs both bot_token and chat_id; channel off")
    if cfg.slack_webhook:
        channels.append(SlackChannel(client, cfg.slack_webhook))
    if cfg.webhook_url:
        channels.append(WebhookChannel(client, cfg.webhook_url))
    if cfg.email_recipients:
        channels.append(EmailChannel(cfg.smtp, cfg.email_recipients, ssl_context))
    return channels
