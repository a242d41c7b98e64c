"""Who can reach the proxy: without API keys it serves loopback only, refuses any other
address (exit code 2, naming API_KEYS), and serves one anyway only with ALLOW_NO_AUTH=1, with
a warning. As a function (`exposure_notice`) and as the real `python -m proxy serve`, run in a
clean environment; every wait on the child is bounded."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proxy.auth import ExposureRefused, exposure_notice
from proxy.launcher import free_port
from proxy.settings import REPO_ROOT
from tests.support import closed_port_url

START_TIMEOUT_S = 60.0

LOOPBACK = ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]
# "" binds every interface, and a host name may resolve to anything.
EXPOSED = ["0.0.0.0", "::", "192.0.2.10", "proxy.example", ""]


# -- exposure_notice ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", LOOPBACK + EXPOSED)
def test_with_keys_any_address_is_served(host: str) -> None:
    for allow in (False, True):
        notice = exposure_notice(host, keys_configured=True, allow_no_auth=allow)
        assert "API keys required" in notice and not notice.startswith("WARNING"), notice


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_without_keys_is_served_and_says_it_is_loopback_only(host: str) -> None:
    for allow in (False, True):
        notice = exposure_notice(host, keys_configured=False, allow_no_auth=allow)
        assert not notice.startswith("WARNING"), notice
        assert "only" in notice and "API_KEYS" in notice and host in notice, notice


@pytest.mark.parametrize("host", EXPOSED)
def test_another_address_without_keys_is_refused_naming_the_way_out(host: str) -> None:
    with pytest.raises(ExposureRefused) as refused:
        exposure_notice(host, keys_configured=False, allow_no_auth=False)
    message = str(refused.value)
    assert "API_KEYS" in message and "ALLOW_NO_AUTH=1" in message and "127.0.0.1" in message


@pytest.mark.parametrize("host", EXPOSED)
def test_allow_no_auth_serves_another_address_with_a_warning(host: str) -> None:
    notice = exposure_notice(host, keys_configured=False, allow_no_auth=True)
    assert notice.startswith("WARNING") and "NO authentication" in notice, notice
    assert "API_KEYS" in notice and f"listening on {host} " in notice, notice


# -- python -m proxy serve ----------------------------------------------------------------------


def clean_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """Only what a Python needs, plus `variables`: no API_KEYS, PROXY_HOST, ... from the shell."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "DATA_DIR": str(tmp_path / "data"),
        "COMFYUI_URL": closed_port_url(),  # nothing listens there
        **variables,
    }


def serve_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "proxy", "serve", *flags]


class Child:
    """A running `python -m proxy serve`, its stderr read line by line within deadlines."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    def wait_for_line(self, text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """The first line (from here on) containing `text`; fails after `timeout_s` or when
        the child exits first."""
        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    self.lines.append(line)
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line with {text!r} in {timeout_s} s: {self.lines}")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.process.wait(10)
                    raise AssertionError(f"exited ({code}) before {text!r}: {self.lines}")
                self._buffer += chunk


@contextmanager
def serving(command: list[str], env: dict[str, str]) -> Iterator[Child]:
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield Child(process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize(
    ("flags", "variables"),
    [
        (("--host", "0.0.0.0"), {}),
        ((), {"PROXY_HOST": "0.0.0.0"}),
        # Empty or blank key lists are no keys.
        (("--host", "0.0.0.0"), {"API_KEYS": "", "ADMIN_API_KEYS": ""}),
        (("--host", "0.0.0.0"), {"API_KEYS": " , ", "ALLOW_NO_AUTH": "0"}),
    ],
    ids=["flag", "PROXY_HOST", "empty-keys", "blank-keys"],
)
def test_serving_another_address_without_keys_exits_2_naming_api_keys(
    tmp_path: Path, flags: tuple[str, ...], variables: dict[str, str]
) -> None:
    command = serve_command(*flags, "--port", str(free_port()))
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=clean_env(tmp_path, **variables),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, stderr)
    assert "API_KEYS" in stderr and "0.0.0.0" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_allow_no_auth_serves_another_address_with_a_warning_at_start(tmp_path: Path) -> None:
    command = serve_command("--host", "0.0.0.0", "--port", str(free_port(host="0.0.0.0")))
    with serving(command, clean_env(tmp_path, ALLOW_NO_AUTH="1")) as child:
        warning = child.wait_for_line("NO authentication")
        assert "WARNING" in warning and "0.0.0.0" in warning, warning
        child.wait_for_line("Uvicorn running on")  # it did start
        assert child.process.poll() is None


def test_loopback_without_keys_says_it_listens_on_loopback_only(tmp_path: Path) -> None:
    command = serve_command("--host", "127.0.0.1", "--port", str(free_port()))
    with serving(command, clean_env(tmp_path)) as child:
        notice = child.wait_for_line("no API_KEYS configured")
        assert "INFO" in notice and "127.0.0.1 only" in notice, notice
        child.wait_for_line("Uvicorn running on")
        assert child.process.poll() is None
