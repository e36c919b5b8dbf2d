"""AlertManager against real local servers: an http.server stub for Telegram/Slack/webhook and
aiosmtpd for e-mail. Time is a fake clock whose sleeper advances it, so backoff never sleeps."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import ssl
import struct
import time
import zlib
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests import alert_stub
from tests.alert_stub import TOKEN, multipart, telegram_cfg
from tests.helpers import free_port
from ttsops.config import AlertsConfig
from ttsops.smart_tuner.alerts.alert_manager import Alert, AlertManager, Event, NullNotifier, build_notifier

stub = alert_stub.stub  # the fake Telegram/Slack/webhook server (a fixture, used by name below)

SLACK_PATH = "/services/T000/B000/slacksecretXYZ"
HOOK_PATH = "/hooks/webhooksecret987"
SMTP_PASSWORD = "smtp-Pa55-secret"


# --- helpers ------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def make_manager(cfg: dict[str, Any], client: httpx.Client, clock: FakeClock, **kw: Any) -> AlertManager:
    return AlertManager(AlertsConfig(**cfg), client=client, clock=clock, sleeper=clock.sleep, **kw)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([0, 128, 255] * 2) for _ in range(2))
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def tiny_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.sin(np.linspace(0, 100, 2205)).astype(np.float32), 22050, format="WAV")
    return buf.getvalue()


# --- Telegram, Slack, webhook -------------------------------------------------------------------
def test_telegram_new_best_carries_message_alignment_image_and_audio(stub, client, clock):
    png, wav = tiny_png(), tiny_wav()
    with make_manager(telegram_cfg(stub), client, clock) as am:
        am.new_best("s1", 3, 0.4321, {"val_loss": 0.5, "mcd": 7.25}, alignment_png=png, audio_wav=wav)
        assert am.flush(10)
        assert am.stats["telegram"] == {"sent": 1, "failed": 0, "retries": 0, "dropped": 0}
    base = f"/bot{TOKEN}"
    assert stub.paths() == [f"{base}/sendMessage", f"{base}/sendPhoto", f"{base}/sendAudio"]
    message = json.loads(stub.requests[0]["body"])
    assert message["chat_id"] == "42"
    assert "new best 0.4321 (generation 3)" in message["text"] and "mcd: 7.25" in message["text"]
    photo = multipart(stub.requests[1])
    assert photo["chat_id"].get_content() == "42"
    assert photo["photo"].get_content() == png and photo["photo"].get_filename() == "alignment.png"
    audio = multipart(stub.requests[2])
    assert audio["audio"].get_content() == wav
    assert sf.info(io.BytesIO(audio["audio"].get_content())).samplerate == 22050


def test_telegram_retry_does_not_repeat_parts_already_sent(stub, client, clock):
    stub.statuses = [200, 500, 200]  # the photo fails once
    with make_manager(telegram_cfg(stub), client, clock) as am:
        am.new_best("s1", 1, 1.0, alignment_png=tiny_png())
        assert am.flush(10)
    assert [p.rsplit("/", 1)[1] for p in stub.paths()] == ["sendMessage", "sendPhoto", "sendPhoto"]


def test_slack_webhook_receives_early_stop_reasons(stub, client, clock):
    with make_manager({"slack_webhook": stub.url + SLACK_PATH}, client, clock) as am:
        am.early_stop("s1", True, {"patience": "no improvement in 5 generations", "vote": 0.72})
        assert am.flush(10)
    assert stub.paths() == [SLACK_PATH]
    text = json.loads(stub.requests[0]["body"])["text"]
    assert "early-stop decision: stop the study" in text
    assert "no improvement in 5 generations" in text and "*vote*: 0.72" in text


def test_generic_webhook_posts_structured_json(stub, client, clock):
    with make_manager({"webhook_url": stub.url + HOOK_PATH}, client, clock) as am:
        am.generation_pruned("s1", 4, "hyperband: below median at epoch 2", epoch=2)
        am.crash("s1", 5, "train.py exited with code 1", will_retry=True)
        assert am.flush(10)
    payloads = [json.loads(r["body"]) for r in stub.requests]
    assert [p["event"] for p in payloads] == ["generation_pruned", "crash"]
    assert payloads[0]["fields"] == {"epoch": 2} and payloads[0]["text"].startswith("hyperband")
    assert payloads[1]["level"] == "error" and payloads[1]["fields"] == {"will_retry": True}


# --- retries, timeouts, rate limits, de-duplication ----------------------------------------------
def test_channel_answering_500_is_retried_with_backoff_then_given_up(stub, client, clock, caplog):
    stub.statuses = [500] * 10
    with make_manager({"slack_webhook": stub.url + SLACK_PATH, "max_retries": 3}, client, clock) as am:
        started = time.perf_counter()
        am.study_started("s1", n_trials=10)
        assert time.perf_counter() - started < 0.5  # the caller only enqueued
        assert am.flush(10)
        assert am.stats["slack"]["failed"] == 1 and am.stats["slack"]["retries"] == 3
    assert len(stub.requests) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert "alert channel slack gave up" in caplog.text


def test_500_then_success_is_delivered_once(stub, client, clock):
    stub.statuses = [500, 503]
    with make_manager({"webhook_url": stub.url + HOOK_PATH}, client, clock) as am:
        am.retry("s1", 2, attempt=1, max_attempts=2)
        assert am.flush(10)
        assert am.stats["webhook"] == {"sent": 1, "failed": 0, "retries": 2, "dropped": 0}
    assert len(stub.requests) == 3


def test_channel_that_times_out_is_retried_then_given_up_without_blocking_caller(stub, clock):
    stub.delay_s = 1.0
    with httpx.Client(timeout=0.2) as slow_client:
        am = make_manager(telegram_cfg(stub, max_retries=1), slow_client, clock)
        started = time.perf_counter()
        for g in range(3):
            am.generation_started("s1", g, {"learning_rate": 1e-3})
        assert time.perf_counter() - started < 0.5
        assert am.flush(20)
        am.close()
    assert am.stats["telegram"]["failed"] == 3 and am.stats["telegram"]["retries"] == 3
    assert len(stub.requests) == 6


def test_client_error_is_not_retried(stub, client, clock):
    stub.statuses = [401]
    with make_manager(telegram_cfg(stub), client, clock) as am:
        am.study_finished("s1", 0.3, 12, "patience exhausted")
        assert am.flush(10)
        assert am.stats["telegram"]["failed"] == 1
    assert len(stub.requests) == 1 and clock.sleeps == []


def test_telegram_429_waits_retry_after(stub, client, clock):
    stub.statuses = [429]
    stub.body_for_status[429] = b'{"ok": false, "error_code": 429, "parameters": {"retry_after": 7}}'
    with make_manager(telegram_cfg(stub), client, clock) as am:
        am.study_started("s1")
        assert am.flush(10)
        assert am.stats["telegram"]["sent"] == 1
    assert clock.sleeps == [7.0]


def test_rate_limit_spaces_sends_per_channel(stub, client, clock):
    with make_manager({"webhook_url": stub.url + HOOK_PATH, "min_interval_s": 5.0}, client, clock) as am:
        for g in range(3):
            am.generation_finished("s1", g, 0.5 - g / 10)
        assert am.flush(10)
    assert len(stub.requests) == 3
    assert clock.sleeps == [5.0, 5.0]


def test_identical_alerts_within_the_window_are_sent_once(stub, client, clock):
    cfg = {"webhook_url": stub.url + HOOK_PATH, "dedup_window_s": 60.0, "min_interval_s": 0.0}
    with make_manager(cfg, client, clock) as am:
        am.crash("s1", 3, "CUDA out of memory", will_retry=False)
        am.crash("s1", 3, "CUDA out of memory", will_retry=False)
        am.crash("s1", 4, "CUDA out of memory", will_retry=False)  # another generation: not a duplicate
        assert am.flush(10)
        assert len(stub.requests) == 2
        clock.now += 61
        am.crash("s1", 3, "CUDA out of memory", will_retry=False)
        assert am.flush(10)
    assert len(stub.requests) == 3


def test_full_queue_drops_instead_of_blocking(stub, clock):
    stub.delay_s = 0.5
    with httpx.Client(timeout=5.0) as c:
        am = make_manager({"webhook_url": stub.url + HOOK_PATH, "dedup_window_s": 0}, c, clock, queue_size=2)
        started = time.perf_counter()
        for g in range(10):
            am.generation_started("s1", g, {})
        assert time.perf_counter() - started < 0.4
        assert am.flush(10)
        am.close()
    assert am.stats["webhook"]["dropped"] >= 7
    assert am.stats["webhook"]["sent"] + am.stats["webhook"]["dropped"] == 10


# --- secrets ------------------------------------------------------------------------------------
def test_secrets_never_appear_in_logs_or_repr(stub, client, clock, caplog):
    caplog.set_level(logging.DEBUG)
    stub.statuses = [500] * 20
    dead = f"http://127.0.0.1:{free_port()}"  # connection refused: the exception carries the URL
    cfg = {
        "telegram": {"bot_token": TOKEN, "chat_id": "42", "api_base": dead},
        "slack_webhook": stub.url + SLACK_PATH,
        "webhook_url": dead + HOOK_PATH,
        "email_recipients": ["ops@example.com"],
        "smtp": {
            "host": "127.0.0.1",
            "port": free_port(),
            "security": "none",
            "username": "u",
            "password": SMTP_PASSWORD,
            "timeout_s": 1.0,
        },
        "max_retries": 1,
    }
    with make_manager(cfg, client, clock) as am:
        am.crash("s1", 1, "boom", will_retry=False)
        assert am.flush(20)
        assert all(am.stats[ch]["failed"] == 1 for ch in ("telegram", "slack", "webhook", "email"))
        reprs = repr(am) + repr(AlertsConfig(**cfg)) + repr(am._workers)
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request URLs ...
    assert "***" in caplog.text  # ... redacted
    for secret in (TOKEN, "SECRET-bot-token", SLACK_PATH, "slacksecretXYZ", HOOK_PATH, SMTP_PASSWORD):
        assert secret not in caplog.text, secret
        assert secret not in reprs, secret


# --- e-mail over a real SMTP server -------------------------------------------------------------
class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope, message_from_bytes(envelope.content, policy=default_policy)))
        implicit_tls = server.transport.get_extra_info("ssl_object") is not None
        self.tls = session.ssl is not None or implicit_tls
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"tuner" and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # handled=True would leave the reply to us


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_email_with_auth_and_attachments_reaches_smtp_server(tmp_path, client, clock, security):
    from aiosmtpd.controller import Controller

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    kwargs: dict[str, Any] = {"authenticator": _authenticator, "auth_required": True}
    if security == "none":
        kwargs["auth_require_tls"] = False
    elif security == "starttls":
        kwargs.update(tls_context=server_ctx, require_starttls=True)
    else:  # implicit TLS: aiosmtpd only counts STARTTLS as TLS for its AUTH rule
        kwargs.update(ssl_context=server_ctx, auth_require_tls=False)
    inbox, port = _Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        cfg = {
            "email_recipients": ["ops@example.com", "ml@example.com"],
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "security": security,
                "username": "tuner",
                "password": SMTP_PASSWORD,
                "sender": "tuner@example.com",
                "timeout_s": 5.0,
            },
        }
        with make_manager(cfg, client, clock, ssl_context=client_ctx) as am:
            am.new_best("s1", 2, 0.25, {"stoi": 0.8}, alignment_png=tiny_png(), audio_wav=tiny_wav())
            assert am.flush(15)
            assert am.stats["email"]["sent"] == 1, am.stats
    finally:
        controller.stop()
    ((envelope, msg),) = inbox.messages
    assert envelope.rcpt_tos == ["ops@example.com", "ml@example.com"]
    assert msg["Subject"] == "[ttsops] s1: new best 0.25 (generation 2)"
    assert "stoi: 0.8" in msg.get_body(("plain",)).get_content()
    attachments = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
    assert attachments == {"alignment.png": tiny_png(), "sample.wav": tiny_wav()}
    assert inbox.tls is (security != "none")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_wrong_smtp_password_gives_up_without_retry(client, clock):
    from aiosmtpd.controller import Controller

    inbox, port = _Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        cfg = {
            "email_recipients": ["ops@example.com"],
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "username": "tuner",
                "password": "wrong",
            },
        }
        with make_manager(cfg, client, clock) as am:
            am.study_started("s1")
            assert am.flush(15)
            assert am.stats["email"]["failed"] == 1 and am.stats["email"]["retries"] == 0
    finally:
        controller.stop()
    assert inbox.messages == []


# --- no channels --------------------------------------------------------------------------------
def test_nothing_configured_logs_only(caplog, clock):
    caplog.set_level(logging.INFO, logger="ttsops.smart_tuner.alerts.alert_manager")
    with build_notifier(AlertsConfig(), clock=clock, sleeper=clock.sleep) as am:
        assert isinstance(am, AlertManager) and am.channel_names == ["log"]
        am.early_stop("s1", False, {"vote": 0.2})
        assert am.flush(1)
    assert "alert: s1: early-stop decision: continue | vote: 0.2" in caplog.text


def test_null_notifier_accepts_every_event():
    n = build_notifier(None)
    assert isinstance(n, NullNotifier)
    n.notify(Alert(Event.study_started, "x"))
    n.new_best("s", 1, 0.1, alignment_png=b"x")
    assert n.flush(0)
    n.close()
