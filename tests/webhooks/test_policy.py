"""The parts that decide without a network: which targets are allowed, the retry policy, the
signature, the secret kept in the data folder."""

from __future__ import annotations

import random
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from proxy.errors import InvalidInput
from proxy.jobs.bus import EventBus
from proxy.settings import Settings
from proxy.webhooks import WebhookConfigError, WebhookService
from proxy.webhooks.delivery import Attempt, Backoff, outcome_fields, retry_after_s
from proxy.webhooks.signing import SecretError, Signer
from proxy.webhooks.store import Delivery, DeliveryStatus
from tests.webhooks.conftest import SECRET

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def service(tmp_path: Path, **settings: object) -> WebhookService:
    """A service for its checks only (nothing started, nothing read)."""
    return WebhookService(
        settings=Settings(data_dir=tmp_path, **settings),
        db=None,  # type: ignore[arg-type]
        jobs=None,  # type: ignore[arg-type]
        bus=EventBus(),
        render=lambda job, base: {},
    )


def delivery(**kw: object) -> Delivery:
    values: dict[str, object] = {
        "id": "msg_x",
        "job_id": "j",
        "target_url": "http://h/",
        "event": "job.completed",
        "payload": "{}",
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "last_status_code": None,
        "last_error": None,
        "attempt_log": [],
        "next_attempt_at": NOW,
        "expires_at": NOW + timedelta(hours=24),
        "created_at": NOW,
        "delivered_at": None,
    }
    return Delivery(**{**values, **kw})  # type: ignore[arg-type]


# -- targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http:///hook", "no host"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://token@example.com/hook", "credentials"),
        ("http://example.com:notaport/", "not a URL"),
        ("https://example.com/" + "x" * 2100, "longer than 2048"),
    ],
)
def test_a_bad_url_is_refused_naming_the_field(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        service(tmp_path).check_target(url, None, field="callback")
    assert refused.value.field == "callback" and problem in refused.value.message


def test_allowed_hosts_refuse_every_other_host(tmp_path: Path) -> None:
    settings = Settings.from_env({"WEBHOOK_ALLOWED_HOSTS": "hooks.example.com, *.trusted.test"})
    assert settings.webhook_allowed_hosts == ["hooks.example.com", "*.trusted.test"]
    checks = service(tmp_path, webhook_allowed_hosts=settings.webhook_allowed_hosts)
    for url in (
        "https://hooks.example.com/n8n",
        "http://HOOKS.example.com:8080/x",
        "https://a.trusted.test/",
        "https://b.a.trusted.test/zap",
    ):
        checks.check_target(url, None)
    for url in (
        "http://127.0.0.1:9/",
        "https://example.com/",
        "https://trusted.test/",
        "https://hooks.example.com.evil.test/",
        "https://eviltrusted.test/",
    ):
        with pytest.raises(InvalidInput, match="WEBHOOK_ALLOWED_HOSTS") as refused:
            checks.check_target(url, None)
        assert refused.value.field == "webhook_url"
    # Without the setting any host will do.
    service(tmp_path).check_target("http://127.0.0.1:9/", None)


def test_events_are_checked_and_terminal_ones_always_go(tmp_path: Path) -> None:
    checks = service(tmp_path)
    checks.check_target("https://h.test/", ["job.started", "job.progress", "job.completed"])
    with pytest.raises(InvalidInput) as refused:
        checks.check_target("https://h.test/", ["job.started", "job.finished"])
    assert refused.value.field == "webhook_events" and "job.finished" in refused.value.message


def test_the_settings_are_checked_at_start(tmp_path: Path) -> None:
    env = Settings.from_env({"WEBHOOK_EVENTS": "job.started,job.progress"})
    assert env.webhook_events == ["job.started", "job.progress"]
    with pytest.raises(WebhookConfigError, match="WEBHOOK_URL must be an http"):
        service(tmp_path, webhook_url="mailto:ops@example.com")
    with pytest.raises(WebhookConfigError, match="WEBHOOK_EVENTS: unknown event 'job.done'"):
        service(tmp_path, webhook_url="https://h.test/", webhook_events=["job.done"])
    with pytest.raises(WebhookConfigError, match="WEBHOOK_SECRET is not base64"):
        service(tmp_path, webhook_secret="whsec_not*base64")
    with pytest.raises(WebhookConfigError, match="3 bytes"):
        service(tmp_path, webhook_secret="whsec_YWJj")


# -- the retry policy ---------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(5.0, 3600.0)
    rng = random.Random(7)
    for failures, base in ((1, 5), (2, 10), (3, 20), (8, 640), (10, 2560)):
        for _ in range(20):
            assert base * 0.8 <= backoff.delay_s(failures, rng) <= base * 1.2
    assert all(backoff.delay_s(n, rng) <= 3600.0 for n in (11, 12, 40, 500))
    assert backoff.delay_s(500, rng) >= 3600.0 * 0.8


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_s("120", NOW) == 120.0
    assert retry_after_s("Wed, 01 Jan 2025 12:01:30 GMT", NOW) == 90.0
    assert retry_after_s("soon", NOW) is None
    assert retry_after_s(None, NOW) is None


def tried(**kw: object) -> Attempt:
    return Attempt(at=NOW, duration_s=0.01, **kw)  # type: ignore[arg-type]


def test_a_2xx_delivers_and_logs_the_attempt() -> None:
    fields = outcome_fields(delivery(), tried(status_code=204), Backoff(5, 3600), random.Random())
    assert fields["status"] == "delivered" and fields["delivered_at"] == NOW
    assert fields["attempts"] == 1 and fields["next_attempt_at"] is None
    assert fields["attempt_log"] == [
        {"at": NOW.isoformat(), "status_code": 204, "error": None, "duration_ms": 10}
    ]


@pytest.mark.parametrize("code", [500, 502, 503, 429])
def test_5xx_and_429_are_retried_after_the_backoff(code: int) -> None:
    earlier = [{"status_code": 503}, {"status_code": None}]
    fields = outcome_fields(
        delivery(attempts=2, attempt_log=earlier),
        tried(status_code=code, error=f"HTTP {code}"),
        Backoff(5, 3600),
        random.Random(1),
    )
    assert fields["status"] == "pending" and fields["attempts"] == 3
    wait = (fields["next_attempt_at"] - NOW).total_seconds()
    assert 20 * 0.8 <= wait <= 20 * 1.2  # the third failure in a row: 5 s doubled twice


def test_a_network_error_is_retried_and_retry_after_is_honoured() -> None:
    fields = outcome_fields(
        delivery(), tried(error="ConnectError"), Backoff(5, 3600), random.Random()
    )
    assert fields["status"] == "pending" and fields["last_status_code"] is None
    fields = outcome_fields(
        delivery(),
        tried(status_code=429, error="HTTP 429", retry_after_s=30.0),
        Backoff(5, 3600),
        random.Random(),
    )
    assert fields["next_attempt_at"] == NOW + timedelta(seconds=30)


@pytest.mark.parametrize("code", [400, 401, 404, 410, 301, 302, 307])
def test_other_answers_fail_at_once(code: int) -> None:
    fields = outcome_fields(
        delivery(), tried(status_code=code, error=f"HTTP {code}"), Backoff(5, 3600), random.Random()
    )
    assert fields["status"] == "failed" and fields["next_attempt_at"] is None
    assert fields["last_status_code"] == code


def test_the_last_attempt_is_at_the_horizon_and_then_it_fails() -> None:
    horizon = NOW + timedelta(seconds=3)
    fields = outcome_fields(
        delivery(expires_at=horizon),
        tried(status_code=503, error="HTTP 503"),
        Backoff(60, 3600),
        random.Random(),
    )
    assert fields["status"] == "pending" and fields["next_attempt_at"] == horizon
    late = Attempt(at=horizon, duration_s=0.0, status_code=503, error="HTTP 503")
    fields = outcome_fields(delivery(expires_at=horizon), late, Backoff(60, 3600), random.Random())
    assert fields["status"] == "failed"
    assert fields["last_error"] == "HTTP 503; given up after 1 attempt(s)"


# -- signing ------------------------------------------------------------------------------------


async def test_a_signature_verifies_with_the_standard_webhooks_verifier(tmp_path: Path) -> None:
    signer = Signer(SECRET, tmp_path)
    body = '{"type":"job.completed","data":{"id":"j"}}'
    headers = (await signer.sign("msg_1", datetime.now(UTC), body)).as_dict()
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.completed", "data": {"id": "j"}}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("fastwan-proxy/")
    assert not (tmp_path / "webhook-secret").exists()  # a configured secret is not kept


async def test_a_secret_is_made_once_and_kept_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="proxy.webhooks")
    secret = await Signer(None, tmp_path).secret()
    path = tmp_path / "webhook-secret"
    assert secret.startswith("whsec_") and path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text and secret not in caplog.text
    again = Signer(None, tmp_path)  # the next start
    assert await again.secret() == secret
    path.write_text("whsec_***\n")
    with pytest.raises(SecretError, match="webhook-secret is not base64"):
        await Signer(None, tmp_path).secret()
