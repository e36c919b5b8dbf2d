"""The e-mail channel through AlertManager against a real SMTP server (aiosmtpd): authentication,
STARTTLS and SSL with a self-signed certificate, attachments, a wrong password."""

from __future__ import annotations

import datetime as dt
import ssl
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.unit.smart_tuner.alerts.conftest import make_manager, tiny_png, tiny_wav

SMTP_PASSWORD = "smtp-Pa55-secret"


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
