"""Fixtures and helpers for the alert tests: a fake clock whose sleeper advances it, an httpx client,
tiny PNG and WAV attachments."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from ttsops.config import AlertsConfig
from ttsops.smart_tuner.alerts.alert_manager import AlertManager


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
