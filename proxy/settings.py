"""One typed settings object, built in the app factory from the environment and the CLI.

Every field has an environment variable: its name in upper case (`LLM_TIMEOUT_S`), or the
`validation_alias` it declares (`PROXY_HOST`, `COMFYUI_URL`); empty variables count as unset
and list fields take comma-separated values. The CLI (`python -m proxy serve`) overrides them.

`Settings(...)` reads only its arguments, so tests and benchmarks never pick up whatever the
shell or CI exports; `Settings.from_env()` (the app factory, the CLI) reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WhenUnset:
    """Field metadata: what leaving an optional field unset means, for help texts."""

    meaning: str


# The environment `Settings(...)` reads: none, except inside `Settings.from_env`.
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        parsed = parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )
        # validate_by_name makes the source try a field's own name as well; a field with an
        # alias must be read from the alias only (`HOST` is not the listen address).
        aliased = {
            name if self.case_sensitive else name.lower()
            for name, info in self.settings_cls.model_fields.items()
            if isinstance(info.validation_alias, str)
        }
        return {key: value for key, value in parsed.items() if key not in aliased}


class Settings(BaseSettings):
    """Everything the proxy can be told. Units are in the names (`_s`, `_bytes`)."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        # Fields with an alias (their variable) are still set by name: Settings(host=...).
        validate_by_name=True,
        # As before pydantic-settings: unknown keyword arguments are ignored.
        extra="ignore",
    )

    # `HOST` is set by some shells (zsh) to the machine name, so the listen address has its own.
    # Loopback by default: a non-loopback address needs API keys (or ALLOW_NO_AUTH=1).
    host: str = Field("127.0.0.1", validation_alias="PROXY_HOST")
    port: int = 8189
    comfyui_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8188"], validation_alias="COMFYUI_URL"
    )
    comfyui_dir: Path | None = None
    # ComfyUI's own output and input folders on this machine. Known, the proxy removes a job's
    # files there once it has its own copy (see proxy.jobs.cleanup); `up` sets them for the
    # ComfyUI or stand-in it starts. Unknown, nothing of ComfyUI's on disk is touched.
    comfyui_output_dir: Annotated[
        Path | None, WhenUnset("COMFYUI_DIR/output when `up` starts ComfyUI")
    ] = None
    comfyui_input_dir: Annotated[
        Path | None, WhenUnset("COMFYUI_DIR/input when `up` starts ComfyUI")
    ] = None
    # Finished jobs (completed, failed, cancelled) older than this are deleted with their
    # files, as a DELETE would; unset keeps every job.
    job_retention_days: Annotated[float | None, WhenUnset("keep every job")] = Field(None, gt=0)
    # With neither COMFYUI_URL nor COMFYUI_DIR, `up` first asks here whether a ComfyUI already
    # runs on this machine and uses it; only if none answers does it start the stand-in.
    # `off` skips the question.
    comfyui_probe_url: str = "http://127.0.0.1:8188"
    data_dir: Path = REPO_ROOT / "data"
    output_dir: Annotated[Path | None, WhenUnset("DATA_DIR/outputs")] = None
    database_url: Annotated[str | None, WhenUnset("SQLite in DATA_DIR")] = None
    # The database connection pool. Every request holds a connection only for its query, so
    # 10 + 20 serve hundreds of concurrent pollers (see bench/polling.py); a request that
    # waits longer than the timeout for one is a 503 "the database is busy", not a hang.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    db_pool_timeout_s: float = Field(30.0, gt=0)
    log_level: str = "info"
    # "json": one JSON object per log line, for log collectors; "text" for people.
    log_format: Literal["text", "json"] = "text"
    workflows_dir: Path = REPO_ROOT / "workflows"
    default_workflow: str = "fastwan_t2v"
    # Hot reload: files added, changed or removed in WORKFLOWS_DIR take effect without a
    # restart (a broken edit keeps the last good version serving). `false` reads them once.
    workflows_watch: bool = True
    # Workflows saved in the connected ComfyUI (its user folder `workflows/`, what the graph
    # editor's Save writes) that the proxy follows: each is imported into WORKFLOWS_DIR when
    # it changes there. Names as saved ("my_flow" for workflows/my_flow.json), or `*` for
    # every saved workflow that marks parameters. Empty: only POST /api/workflows/import.
    comfy_workflows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    comfy_workflows_poll_s: float = Field(2.0, gt=0)

    # Set by the launcher when the backend is our stand-in, so every surface can say so.
    standin: bool = False

    # ComfyUI client.
    comfy_http_timeout_s: float = 30.0
    comfy_connect_timeout_s: float = 5.0
    ws_heartbeat_s: float = 20.0
    ws_reconnect_min_s: float = 0.2
    ws_reconnect_max_s: float = 10.0
    # How many prompts the dispatcher keeps queued in one ComfyUI (running + waiting), so the
    # GPU starts the next job the moment the current one ends.
    backend_queue_depth: int = 2
    # How long a job waits for its unreachable backend before it is retried elsewhere or failed.
    backend_down_timeout_s: float = 120.0
    # A running job from which ComfyUI sends nothing (no progress, no node change) for this
    # long is interrupted and failed: ComfyUI hangs. Generous, because loading models or a VAE
    # decode of a long video on a slow GPU can be quiet for minutes. 0 waits forever.
    job_stall_timeout_s: float = 1800.0
    # With no ComfyUI reachable for this long, the jobs waiting in the proxy's queue fail and
    # new ones are refused (503, Retry-After) until one is back. 0 waits forever.
    no_backend_timeout_s: float = Field(600.0, ge=0)
    # How often the dispatcher looks for active jobs that nothing follows (and hands out
    # queued ones it might have missed).
    job_sweep_interval_s: float = Field(5.0, gt=0)

    # Requests.
    max_upload_bytes: int = 100 * 1024 * 1024
    max_active_jobs_per_client: int = 2
    max_batch_size: int = 8
    # The longest a create call or status read may wait (`Prefer: wait=N`, `?wait=N`).
    max_wait_s: float = Field(600.0, ge=0)
    # The largest JSON request body read (uploads have their own limit).
    max_json_bytes: int = 1_000_000

    # Who may use the proxy. `name:key` or a bare key, comma-separated; with none configured
    # the proxy is open to whoever reaches it (and listens on loopback only by default).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Keys that see and act on everything, and alone start model downloads.
    admin_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Serve a non-loopback address without keys (a warning on every start).
    allow_no_auth: bool = False
    # Web pages on other origins allowed to call the API (CORS); none by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Signs the web UI's session cookies; kept in DATA_DIR when not given.
    session_secret: str | None = None
    session_ttl_s: float = 7 * 24 * 3600

    # The proxy's public address (`https://videos.example.com`, a path prefix allowed): every
    # video and status URL in answers and callbacks is absolute under it.
    public_url: Annotated[
        str | None, WhenUnset("each request's own address (see TRUSTED_PROXIES)")
    ] = None
    # Reverse proxies (addresses or networks, `10.0.0.0/8`) whose X-Forwarded-Proto, -Host
    # and -For are believed; from anyone else these headers are ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long a signed download URL (`?expires=…&sig=…`, given when keys are configured)
    # lets its GET in.
    signed_url_ttl_s: float = Field(24 * 3600.0, gt=0)

    # Job callbacks (proxy.webhooks): signed POSTs from a durable outbox, retried with backoff.
    # Every job's events also go to WEBHOOK_URL (completed, failed, cancelled, and the extra
    # WEBHOOK_EVENTS); a create call may name a `webhook_url` of its own.
    webhook_url: Annotated[str | None, WhenUnset("only the create calls' own webhook_url")] = None
    # job.started and/or job.progress, for WEBHOOK_URL (a create call names its own).
    webhook_events: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The Standard Webhooks signing secret (`whsec_<base64>`); receivers verify with it.
    webhook_secret: Annotated[
        str | None,
        WhenUnset("made once, kept in DATA_DIR/webhook-secret (GET /api/webhooks/secret)"),
    ] = None
    # Host names a create call's webhook_url may point at (`*.example.com` for subdomains).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(10.0, gt=0)
    # How long a delivery is retried after its event (on network errors, timeouts, 5xx, 429).
    webhook_retry_horizon_s: float = Field(86400.0, ge=0)
    # The backoff between attempts: the first wait, doubling (with jitter) up to the last.
    webhook_retry_min_s: float = Field(5.0, gt=0)
    webhook_retry_max_s: float = Field(3600.0, gt=0)
    # job.progress is sent at most this often per job.
    webhook_progress_interval_s: float = Field(5.0, ge=0)

    # Prompt tools (any OpenAI-compatible chat completions endpoint).
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = 60.0
    llm_max_concurrency: int = 4

    # Model downloads.
    hf_endpoint: Annotated[str | None, WhenUnset("huggingface.co")] = None
    models_dir: Annotated[Path | None, WhenUnset("COMFYUI_DIR/models")] = None

    @field_validator(
        "comfyui_urls",
        "api_keys",
        "admin_api_keys",
        "cors_origins",
        "webhook_events",
        "webhook_allowed_hosts",
        "trusted_proxies",
        "comfy_workflows",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        # NoDecode keeps pydantic-settings from reading these variables as JSON.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _strip_slash(cls, value: list[str]) -> list[str]:
        return [url.rstrip("/") for url in value]

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"PUBLIC_URL must be an http(s) address, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"TRUSTED_PROXIES takes addresses or networks (10.0.0.0/8), got {entry!r}"
                ) from None
        return value

    @property
    def outputs_path(self) -> Path:
        """Where finished videos are stored (`--output-dir`, else `<data-dir>/outputs`)."""
        return self.output_dir or self.data_dir / "outputs"

    @property
    def uploads_path(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'proxy.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only arguments, unless from_env supplies an environment; arguments rank above it.
        environ = _environ.get()
        if environ is None:
            return (init_settings,)
        return (init_settings, _MappingEnvSource(settings_cls, environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from environment variables (`os.environ` unless given), then apply
        the overrides that are not None (unset CLI flags arrive as None)."""
        # Any: the values are validated by the model, not by the type checker.
        values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        with _reading(os.environ if environ is None else environ):
            return cls(**values)


@contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _environ.set(environ)
    try:
        yield
    finally:
        _environ.reset(token)


def env_var(field: str) -> str:
    """The environment variable a settings field is read from."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field.upper()


def default_text(field: str) -> str | None:
    """A field's default as a person would write it (`./data`, `a,b`), or None for none."""
    info = Settings.model_fields[field]
    for meta in info.metadata:
        if isinstance(meta, WhenUnset):
            return meta.meaning
    value = info.get_default(call_default_factory=True)
    if value is None or value == []:
        return None
    if isinstance(value, Path):
        return (
            f"./{value.relative_to(REPO_ROOT)}" if value.is_relative_to(REPO_ROOT) else str(value)
        )
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def env_help(field: str) -> str:
    """`env COMFYUI_URL, comma-separated; default http://127.0.0.1:8188`, for CLI help."""
    text = f"env {env_var(field)}"
    if get_origin(Settings.model_fields[field].annotation) is list:
        text += ", comma-separated"
    default = default_text(field)
    return f"{text}; default {default}" if default is not None else text


# Field → environment variable, derived from the fields (for docs and older callers).
ENV_VARS: dict[str, str] = {name: env_var(name) for name in Settings.model_fields}
