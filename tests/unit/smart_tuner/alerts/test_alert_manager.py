"""AlertManager against a real local server (an http.server stub for Telegram/Slack/webhook): what
each channel receives, retries, rate limits, de-duplication, secrets. Time is a fake clock whose
sleeper advances it, so backoff never sleeps (conftest.py). E-mail: test_channels.py."""

from __future__ import annotations

import io
import json
import logging
import time

import httpx
import soundfile as sf

from tests.alert_stub import TOKEN, multipart, telegram_cfg
from tests.helpers import free_port
from tests.unit.smart_tuner.alerts.conftest import make_manager, tiny_png, tiny_wav
from ttsops.config import AlertsConfig
from ttsops.smart_tuner.alerts.alert_manager import Alert, AlertManager, Event, NullNotifier, build_notifier

SLACK_PATH = "/services/T000/B000/slacksecretXYZ"
HOOK_PATH = "/hooks/webhooksecret987"
SMTP_PASSWORD = "smtp-Pa55-secret"


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
        am.preempted("s1", 6, "killed by SIGKILL", will_resume=True)
        assert am.flush(10)
    payloads = [json.loads(r["body"]) for r in stub.requests]
    assert [p["event"] for p in payloads] == ["generation_pruned", "crash", "preempted"]
    assert payloads[0]["fields"] == {"epoch": 2} and payloads[0]["text"].startswith("hyperband")
    assert payloads[1]["level"] == "error" and payloads[1]["fields"] == {"will_retry": True}
    assert payloads[2]["level"] == "warning" and payloads[2]["fields"] == {"will_resume": True}
    assert payloads[2]["text"] == "killed by SIGKILL" and "generation 6 preempted" in payloads[2]["title"]


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
