"""AlertManager: tuner events -> Telegram, Slack, e-mail (SMTP), a JSON webhook and the log.

The caller (the tuner loop) only ever enqueues: every configured channel has its own worker thread
and bounded queue, so a slow or failing channel delays nobody and never raises into training.
Each delivery is retried with exponential backoff (``max_retries``; 429 ``retry_after`` honoured),
channels are rate limited (``min_interval_s`` between sends) and identical alerts within
``dedup_window_s`` are sent once. ``flush(timeout)`` waits for the queues (tests, shutdown).

Secrets (bot token, webhook URLs, SMTP password) are redacted from every log line this module
writes, from httpx's request log (a filter on the ``httpx`` logger while the manager is open) and
from ``repr``. With nothing configured, alerts go to the log only; ``NullNotifier`` drops them.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from ttsops.config import AlertsConfig
from ttsops.smart_tuner.alerts.channels import (
    Alert,
    Channel,
    DeliveryError,
    Event,
    RedactingFilter,
    Redactor,
    build_channels,
    fmt_value,
)

__all__ = ["Alert", "AlertManager", "Event", "NullNotifier", "Notifier", "build_notifier"]

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


class Clock(Protocol):
    def __call__(self) -> float: ...


class Sleeper(Protocol):
    def __call__(self, seconds: float) -> None: ...


class _Worker:
    """One channel's bounded queue and delivery thread (rate limit, retries with backoff)."""

    def __init__(self, channel: Channel, owner: AlertManager, queue_size: int) -> None:
        self.channel, self._owner = channel, owner
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self._last_send: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"alerts-{channel.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            alert = self.queue.get()
            try:
                if alert is None:
                    return
                if not self._owner.stopping:
                    self._deliver(alert)
            except Exception as e:  # a bug in a channel must not kill its worker
                self._owner.record(self.channel.name, "failed", f"unexpected {type(e).__name__}: {e}")
            finally:
                self.queue.task_done()
            if self._owner.stopping and self.queue.empty():
                return

    def _deliver(self, alert: Alert) -> None:
        o = self._owner
        for attempt in range(o.max_retries + 1):
            if self._last_send is not None:
                wait = o.min_interval_s - (o.clock() - self._last_send)
                if wait > 0:
                    o.sleeper(wait)
            self._last_send = o.clock()
            try:
                self.channel.send(alert)
                o.record(self.channel.name, "sent")
                return
            except (DeliveryError, httpx.HTTPError) as e:
                retryable = getattr(e, "retryable", True)
                if not retryable or attempt == o.max_retries or o.stopping:
                    o.record(self.channel.name, "failed", f"{alert.event.value}: {e} (attempt {attempt + 1})")
                    return
                delay = min(BACKOFF_BASE_S * 2**attempt, BACKOFF_CAP_S)
                delay = max(delay, getattr(e, "retry_after", None) or 0.0)
                o.record(self.channel.name, "retries", f"{e}; retrying in {delay:.3g} s")
                o.sleeper(delay)


class Notifier:
    """Builders for the tuner's events; subclasses implement ``notify``."""

    def notify(self, alert: Alert) -> None:
        raise NotImplementedError

    def study_started(self, study: str, **info: Any) -> None:
        self.notify(Alert(Event.study_started, f"Study {study} started", fields=info))

    def study_finished(
        self, study: str, best_value: float | None, n_generations: int, reason: str = ""
    ) -> None:
        self.notify(
            Alert(
                Event.study_finished,
                f"Study {study} finished",
                reason,
                {"best_value": best_value, "generations": n_generations},
            )
        )

    def generation_started(self, study: str, generation: int, hparams: Mapping[str, Any]) -> None:
        self.notify(
            Alert(
                Event.generation_started,
                f"{study}: generation {generation} started",
                fields={"hparams": dict(hparams)},
            )
        )

    def generation_finished(self, study: str, generation: int, value: float | None, **metrics: Any) -> None:
        self.notify(
            Alert(
                Event.generation_finished,
                f"{study}: generation {generation} finished",
                fields={"value": value, **metrics},
            )
        )

    def generation_pruned(self, study: str, generation: int, reason: str, **info: Any) -> None:
        self.notify(Alert(Event.generation_pruned, f"{study}: generation {generation} pruned", reason, info))

    def new_best(
        self,
        study: str,
        generation: int,
        value: float,
        metrics: Mapping[str, Any] | None = None,
        alignment_png: bytes | None = None,
        audio_wav: bytes | None = None,
    ) -> None:
        self.notify(
            Alert(
                Event.new_best,
                f"{study}: new best {fmt_value(value)} (generation {generation})",
                fields=dict(metrics or {}),
                image_png=alignment_png,
                audio_wav=audio_wav,
            )
        )

    def early_stop(self, study: str, stop: bool, reasons: Mapping[str, Any]) -> None:
        verdict = "stop the study" if stop else "continue"
        self.notify(
            Alert(
                Event.early_stop,
                f"{study}: early-stop decision: {verdict}",
                fields=dict(reasons),
                level=logging.WARNING if stop else logging.INFO,
            )
        )

    def crash(self, study: str, generation: int, error: str, will_retry: bool) -> None:
        self.notify(
            Alert(
                Event.crash,
                f"{study}: generation {generation} crashed",
                error,
                {"will_retry": will_retry},
                level=logging.ERROR,
            )
        )

    def preempted(self, study: str, generation: int, why: str, will_resume: bool) -> None:
        """Killed from outside (not a crash): it resumes from its checkpoint unless in a loop."""
        self.notify(
            Alert(
                Event.preempted,
                f"{study}: generation {generation} preempted",
                why,
                {"will_resume": will_resume},
                level=logging.WARNING if will_resume else logging.ERROR,
            )
        )

    def retry(self, study: str, generation: int, attempt: int, max_attempts: int) -> None:
        self.notify(
            Alert(
                Event.retry,
                f"{study}: retrying generation {generation}",
                fields={"attempt": attempt, "max_attempts": max_attempts},
                level=logging.WARNING,
            )
        )

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        return None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullNotifier(Notifier):
    """Alerts off: every event is dropped."""

    def notify(self, alert: Alert) -> None:
        return None


class AlertManager(Notifier):
    """Fans alerts out to the configured channels in background threads; never raises to the caller.

    ``clock`` (monotonic seconds) drives de-duplication and rate limiting, ``sleeper`` waits for
    backoff and rate limits (default: an Event wait that ``close`` interrupts); ``flush`` and
    ``close`` time out in real seconds.
    """

    def __init__(
        self,
        cfg: AlertsConfig,
        client: httpx.Client | None = None,
        clock: Clock | None = None,
        sleeper: Sleeper | None = None,
        queue_size: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._stop = threading.Event()
        self.clock: Clock = clock or time.monotonic
        self.sleeper: Sleeper = sleeper or self._interruptible_sleep
        self.min_interval_s, self.max_retries = cfg.min_interval_s, cfg.max_retries
        self._dedup_window_s = cfg.dedup_window_s
        self._redact = Redactor(
            [cfg.telegram.bot_token, cfg.slack_webhook, cfg.webhook_url, cfg.smtp.password]
        )
        self._httpx_filter = RedactingFilter(self._redact)
        logging.getLogger("httpx").addFilter(self._httpx_filter)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=10.0)
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self.stats: dict[str, dict[str, int]] = {}
        channels = build_channels(cfg, self._client, ssl_context)
        self._workers = [_Worker(ch, self, queue_size) for ch in channels]
        for ch in channels:
            self.stats[ch.name] = {"sent": 0, "failed": 0, "retries": 0, "dropped": 0}

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def __repr__(self) -> str:
        return f"AlertManager(channels={self.channel_names!r})"

    @property
    def channel_names(self) -> list[str]:
        return ["log"] + [w.channel.name for w in self._workers]

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def record(self, channel: str, what: str, detail: str = "") -> None:
        """Count an outcome and log it, redacted (called by the workers)."""
        with self._lock:
            self.stats[channel][what] += 1
        if what == "failed":
            logger.warning("alert channel %s gave up: %s", channel, self._redact(detail))
        elif what in ("retries", "dropped"):
            logger.info("alert channel %s: %s %s", channel, what, self._redact(detail))

    def _is_duplicate(self, alert: Alert) -> bool:
        now, key = self.clock(), alert.dedup_key
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self._dedup_window_s}
            if key in self._seen:
                return True
            self._seen[key] = now
        return False

    def notify(self, alert: Alert) -> None:
        try:
            if self._dedup_window_s > 0 and self._is_duplicate(alert):
                logger.debug("alert suppressed as a duplicate: %s", self._redact(alert.title))
                return
            logger.log(alert.level, "alert: %s", self._redact(alert.body()).replace("\n", " | "))
            for w in self._workers:
                if self.stopping:
                    return
                try:
                    w.queue.put_nowait(alert)
                except queue.Full:
                    self.record(w.channel.name, "dropped", f"queue full, {alert.event.value} dropped")
        except Exception as e:  # alerts must never break the caller
            logger.warning("alert %s not queued: %s", alert.event.value, self._redact(e))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        for w in self._workers:
            q = w.queue
            with q.all_tasks_done:
                while q.unfinished_tasks:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    q.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the workers."""
        self.flush(timeout)
        self._stop.set()
        for w in self._workers:
            try:
                w.queue.put_nowait(None)
            except queue.Full:
                pass  # the worker sees `stopping` and skips the rest
        for w in self._workers:
            w.thread.join(timeout=1.0)
        logging.getLogger("httpx").removeFilter(self._httpx_filter)
        if self._own_client:
            self._client.close()


def build_notifier(cfg: AlertsConfig | None, **kw: Any) -> Notifier:
    """``AlertManager`` for a config (log-only when no channel is set), ``NullNotifier`` for None."""
    return NullNotifier() if cfg is None else AlertManager(cfg, **kw)
