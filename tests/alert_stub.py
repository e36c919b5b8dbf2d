"""A real HTTP server on 127.0.0.1 standing in for Telegram, Slack and a JSON webhook in alert tests
(the AlertManager's unit tests and the tuner's new-best alert test)."""

from __future__ import annotations

import threading
import time
from email.message import Message
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "123456:SECRET-bot-token-abc"


class Stub:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # consumed one per request; 200 when empty
        self.body_for_status: dict[int, bytes] = {}
        self.delay_s = 0.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                status = stub.statuses.pop(0) if stub.statuses else 200
                payload = stub.body_for_status.get(status, b'{"ok": true, "result": {}}')
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client timed out and hung up
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def multipart(req: dict[str, Any]) -> dict[str, Message]:
    """A recorded multipart/form-data request (Telegram's sendPhoto, sendAudio) by part name."""
    head = f"Content-Type: {req['headers']['Content-Type']}\r\n\r\n".encode()
    msg = BytesParser(policy=default_policy).parsebytes(head + req["body"])
    return {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}


def telegram_cfg(stub: Stub, **extra: Any) -> dict[str, Any]:
    """An ``AlertsConfig`` dict sending to the stub as the Telegram Bot API."""
    return {"telegram": {"bot_token": TOKEN, "chat_id": "42", "api_base": stub.url}, **extra}
