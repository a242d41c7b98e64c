"""A bounded schemathesis run over the whole OpenAPI document of an offline proxy.

Schemathesis drives the ASGI app in process (its lifespan runs on a thread of schemathesis's
own), with an admin key, so every route is reached. Each operation gets a few generated
requests, valid ones and invalid ones, derandomized, so a run is the same every time.
None may be answered with a 500. A 503 is allowed: it is this proxy's documented answer while
no ComfyUI is connected or no language model is configured, and it must say which.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.python import asgi

from proxy.api.errors import INTERNAL_ERROR
from proxy.app import create_app
from proxy.settings import Settings
from tests.support import closed_port_url

ADMIN_KEY = "key-ops-schemathesis"
HEADERS = {"X-API-Key": ADMIN_KEY}
EXAMPLES_PER_MODE = 3
CALL_TIMEOUT_S = 10.0

SKIPPED = {
    # Every job change as Server-Sent Events: the stream never ends by itself. (Its per-job
    # sibling is kept: generated ids name no job, so it answers 404 at once.)
    ("GET", "/api/events"): "streams forever",
}

# A 503 is expected of an offline proxy; anything else from 500 up is a failure.
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}}
)


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    app = create_app(
        Settings(
            data_dir=tmp / "data",
            comfyui_urls=[closed_port_url()],  # nothing listens: jobs stay queued
            ws_reconnect_min_s=5.0,
            ws_reconnect_max_s=30.0,
            admin_api_keys=[f"ops:{ADMIN_KEY}"],
            api_keys=["user:key-user-schemathesis"],
            models_dir=tmp / "models",
            hf_endpoint=closed_port_url(),  # a download started here fails at once
        )
    )
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=HEADERS)
    try:
        yield loaded
    finally:
        # The app's lifespan (database, clients, dispatcher) ends with this module.
        asgi.shutdown_lifespans()


def traceback_tail(exc: BaseException) -> str:
    """The last frames of an exception's traceback, and the exception."""
    lines = [
        f"      at {frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)[-3:]
    ]
    return "\n".join([*lines, f"      {type(exc).__name__}: {exc}"])


def server_log(records: list[logging.LogRecord]) -> str:
    """What the proxy logged about a request: each message, with its traceback's end."""
    lines = []
    for record in records:
        lines.append(f"    log: {record.levelname} {record.name}: {record.getMessage()}")
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(traceback_tail(record.exc_info[1]))
    return "\n".join(lines)


def exercise(
    operation: Any,
    mode: GenerationMode,
    caplog: pytest.LogCaptureFixture,
    failures: list[str],
    ran: dict[str, int],
) -> None:
    """A few generated requests to one operation; what fails is added to `failures`."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        caplog.clear()
        try:
            response = case.call(headers=HEADERS, timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            # In process, Starlette sends the 500 and then raises the exception again (for
            # servers to log): that is this operation's 500.
            failures.append(
                f"{operation.label} ({mode.value}): 500, raised {type(exc).__name__}: {exc}\n"
                f"    {case.as_curl_command(headers=HEADERS)}\n"
                f"{traceback_tail(exc)}"
            )
            return
        ran[operation.label] = ran.get(operation.label, 0) + 1
        problem = None
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup:
            problem = f"{response.status_code} {response.text[:300]}"
        if response.status_code == 503:
            body = response.json() or {}
            # An error sentence, or the readiness probe's reasons.
            reason = body.get("error") or body.get("reasons")
            if not reason or reason == INTERNAL_ERROR:
                problem = f"503 without a reason: {response.text[:300]}"
        if problem:
            failures.append(
                f"{operation.label} ({mode.value}): {problem}\n"
                f"    {case.as_curl_command(headers=HEADERS)}\n"
                f"{server_log(caplog.records)}"
            )

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or a body.
        assert mode is GenerationMode.NEGATIVE, operation.label


# Schemathesis's negative generation draws from the `random` module inside its strategies,
# which Hypothesis warns about (not our code, and not an error of the API under test).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_no_operation_answers_with_a_server_error(
    schema: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    failures: list[str] = []
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode, caplog, failures, ran)
    assert len(ran) >= 55, sorted(ran)  # the whole document was exercised
    assert not failures, "\n".join(failures)
