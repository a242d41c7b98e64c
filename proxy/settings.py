"""One typed settings object, built in the app factory from the environment and the CLI.

Every option has an environment variable; the CLI (`python -m proxy serve`) overrides it.
Tests build `Settings(...)` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent

# (field, environment variable). Kept in one table so the CLI help, the README table and the
# environment reader cannot drift apart.
ENV_VARS: dict[str, str] = {
    "host": "PROXY_HOST",
    "port": "PORT",
    "comfyui_urls": "COMFYUI_URL",
    "comfyui_dir": "COMFYUI_DIR",
    "data_dir": "DATA_DIR",
    "output_dir": "OUTPUT_DIR",
    "database_url": "DATABASE_URL",
    "log_level": "LOG_LEVEL",
    "workflows_dir": "WORKFLOWS_DIR",
    "max_upload_bytes": "MAX_UPLOAD_BYTES",
    "max_active_jobs_per_client": "MAX_ACTIVE_JOBS_PER_CLIENT",
    "api_keys": "API_KEYS",
    "llm_base_url": "LLM_BASE_URL",
    "llm_model": "LLM_MODEL",
    "llm_api_key": "LLM_API_KEY",
    "llm_timeout_s": "LLM_TIMEOUT_S",
    "llm_max_concurrency": "LLM_MAX_CONCURRENCY",
    "hf_endpoint": "HF_ENDPOINT",
    "models_dir": "MODELS_DIR",
    "max_batch_size": "MAX_BATCH_SIZE",
    "backend_down_timeout_s": "BACKEND_DOWN_TIMEOUT_S",
    "job_stall_timeout_s": "JOB_STALL_TIMEOUT_S",
}


class Settings(BaseModel):
    """Everything the proxy can be told. Units are in the names (`_s`, `_bytes`)."""

    host: str = "0.0.0.0"
    port: int = 8189
    comfyui_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8188"])
    comfyui_dir: Path | None = None
    data_dir: Path = REPO_ROOT / "data"
    output_dir: Path | None = None
    database_url: str | None = None
    log_level: str = "info"
    workflows_dir: Path = REPO_ROOT / "workflows"
    default_workflow: str = "fastwan_t2v"

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

    # Requests.
    max_upload_bytes: int = 100 * 1024 * 1024
    max_active_jobs_per_client: int = 2
    api_keys: list[str] = Field(default_factory=list)
    max_batch_size: int = 8

    # Prompt tools (any OpenAI-compatible chat completions endpoint).
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = 60.0
    llm_max_concurrency: int = 4

    # Model downloads.
    hf_endpoint: str | None = None
    models_dir: Path | None = None

    @field_validator("comfyui_urls", "api_keys", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _strip_slash(cls, value: list[str]) -> list[str]:
        return [url.rstrip("/") for url in value]

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
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from environment variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, var in ENV_VARS.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
