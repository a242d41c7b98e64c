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
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
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


# What S3 and botocore accept as a bucket name (S3 itself is stricter; other stores less so).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
OUTPUT_STORE_FORM = "s3://bucket or s3://bucket/prefix (unset: local disk, OUTPUT_DIR)"


def parse_output_store(value: str) -> str:
    """OUTPUT_STORE normalised to `s3://bucket[/prefix]`; ValueError saying what is wrong."""
    parts = urlsplit(value)
    if "@" in parts.netloc:  # not repeated: it may hold a secret
        raise ValueError(
            f"OUTPUT_STORE takes {OUTPUT_STORE_FORM} without credentials: give them as "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme.lower() != "s3":
        raise ValueError(f"OUTPUT_STORE takes {OUTPUT_STORE_FORM}, got {value!r}")
    if parts.query or parts.fragment or ":" in parts.netloc:
        raise ValueError(
            f"OUTPUT_STORE takes {OUTPUT_STORE_FORM} (no port or query: the store's address "
            f"is S3_ENDPOINT_URL), got {value!r}"
        )
    if not _BUCKET.fullmatch(parts.netloc):
        raise ValueError(
            f"OUTPUT_STORE names no valid bucket (letters, digits, '.', '-', '_'; at least "
            f"3 characters): {value!r}"
        )
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"OUTPUT_STORE's prefix may not hold '.' or '..': {value!r}")
    return "/".join([f"s3://{parts.netloc}", *segments])


class Settings(BaseSettings):
    """Everything the proxy can be told. Units are in the names (`_s`, `_bytes`)."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        # Fields with an alias (their variable) are still set by name: Settings(host=...).
        validate_by_name=True,
        # As before pydantic-settings: unknown keyword arguments are ignored.
        extra="ignore",
        # A refused value is not repeated in the error: it may be a credential (a key in
        # OUTPUT_STORE or DATABASE_URL, an API key), and the error goes to logs.
        hide_input_in_errors=True,
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
    # Outputs in an S3-compatible bucket instead of OUTPUT_DIR: `s3://bucket` or
    # `s3://bucket/prefix` (the prefix is a folder of keys). Every replica of the proxy may
    # serve every output from there.
    output_store: Annotated[str | None, WhenUnset("local disk (OUTPUT_DIR)")] = None
    # The store's API address (MinIO, Ceph, R2, moto…); unset, AWS S3 of AWS_REGION.
    s3_endpoint_url: Annotated[str | None, WhenUnset("AWS S3")] = None
    # The store's address as the proxy's clients reach it, when it differs from
    # S3_ENDPOINT_URL (a container network name): download redirects point there.
    s3_public_endpoint_url: Annotated[str | None, WhenUnset("S3_ENDPOINT_URL")] = None
    # Downloads are answered with a redirect (307) to a presigned URL of the object, so the
    # bytes never pass through the proxy; `true` streams them through the proxy instead (for a
    # store its clients cannot reach). Range requests work either way.
    s3_proxy_downloads: bool = False
    # How long a presigned download URL works (SigV4 allows at most 7 days).
    s3_presign_ttl_s: float = Field(3600.0, gt=0, le=7 * 24 * 3600)
    # The store's credentials and region, under the variables every AWS tool reads; unset,
    # the usual AWS chain applies (shared config files, AWS_PROFILE, an instance role).
    aws_secret_access_key: Annotated[str | None, WhenUnset("the AWS credential chain")] = None
    aws_access_key_id: Annotated[str | None, WhenUnset("the AWS credential chain")] = Field(
        None, validate_default=True
    )
    aws_session_token: str | None = None
    aws_region: Annotated[str | None, WhenUnset("AWS_DEFAULT_REGION, else us-east-1")] = None
    database_url: Annotated[str | None, WhenUnset("SQLite in DATA_DIR")] = None
    # The database connection pool. Every request holds a connection only for its query, so
    # 10 + 20 serve hundreds of concurrent pollers (see bench/polling.py); a request that
    # waits longer than the timeout for one is a 503 "the database is busy", not a hang.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    db_pool_timeout_s: float = Field(30.0, gt=0)
    # Replicas (PostgreSQL only): this process's name among the proxies sharing the database
    # (unique among the live ones), and how long its hold on a ComfyUI backend lasts without
    # a heartbeat (renewed every third of it): a replica that dies hands its backends to
    # the others within this time.
    replica_id: Annotated[str | None, WhenUnset("<host name>-<pid>")] = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    lease_ttl_s: float = Field(15.0, ge=1, le=3600)
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

    @field_validator("output_store")
    @classmethod
    def _output_store(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return parse_output_store(value.strip())

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"an S3 endpoint must be an http(s) address, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("aws_access_key_id")
    @classmethod
    def _aws_key_pair(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A validator of the key id (declared after the secret, validated even when unset),
        # so that an error repeats the id, never the secret.
        if (value is None) != (info.data.get("aws_secret_access_key") is None):
            raise ValueError(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together: set both, or neither "
                "(for the AWS credential chain)"
            )
        return value

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
