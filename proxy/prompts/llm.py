"""A client for any OpenAI-compatible chat completions endpoint, asking for JSON answers.

Ollama, vLLM, LM Studio, llama.cpp's server, OpenAI and NVIDIA NIM all accept
`POST {base_url}/chat/completions`. Every answer is parsed into a pydantic model; one reply
that does not fit is sent back to the model with the validation error, once. Every failure
leaves here as `LLMError` (502) or `LLMNotConfigured` (503) with a sentence a person can act on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from proxy.errors import LLMError, LLMNotConfigured
from proxy.settings import Settings

log = logging.getLogger("proxy.prompts.llm")

ReplyT = TypeVar("ReplyT", bound=BaseModel)
Message = dict[str, str]

# How much of a model's reply or a server's error body goes into an error message.
SHOWN_CHARS = 600

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
# Reasoning models (DeepSeek-R1, QwQ, ...) served through Ollama put their thoughts inline.
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)


class ReplyNotUsable(ValueError):
    """The model answered, but not with the JSON object we asked for."""


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """Shorten `text` for an error message, saying how much was cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's reply: bare, inside ```json fences, or amid prose."""
    text = _THINKING.sub("", text).strip()
    if not text:
        raise ReplyNotUsable("the reply was empty")
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ReplyNotUsable("the reply contains no JSON object")


def describe_validation_error(exc: ValidationError) -> str:
    """`prompts: List should have at least 3 items; ...` in one line, for people and models."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "reply"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class LLMClient:
    """Sends chat requests to one OpenAI-compatible server and validates the JSON it returns.

    The `httpx.AsyncClient` belongs to the app lifespan; this object only borrows it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str | None,
        model: str | None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_concurrency: int = 4,
    ) -> None:
        self._http = http
        self.base_url = base_url.strip().rstrip("/") if base_url and base_url.strip() else None
        self.model = model.strip() if model and model.strip() else None
        self._api_key = api_key or None
        self.timeout_s = timeout_s
        self.max_concurrency = max(1, max_concurrency)
        self._slots = asyncio.Semaphore(self.max_concurrency)
        # Cleared after a server refused `response_format` and then answered without it.
        self._json_mode = True

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> LLMClient:
        return cls(
            http,
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
            max_concurrency=settings.llm_max_concurrency,
        )

    @property
    def configured(self) -> bool:
        return self.base_url is not None and self.model is not None

    @property
    def url(self) -> str | None:
        """The chat completions URL (a base URL that already names it is used as given)."""
        if self.base_url is None:
            return None
        if self.base_url.endswith("/chat/completions"):
            return self.base_url
        return f"{self.base_url}/chat/completions"

    def not_configured_message(self) -> str:
        missing = [
            var
            for var, value in (("LLM_BASE_URL", self.base_url), ("LLM_MODEL", self.model))
            if value is None
        ]
        return (
            f"Prompt tools need a language model, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set LLM_BASE_URL to an "
            "OpenAI-compatible server (for example http://127.0.0.1:11434/v1 for Ollama, "
            "http://127.0.0.1:8000/v1 for vLLM, https://api.openai.com/v1), LLM_MODEL to a "
            "model it serves, and LLM_API_KEY if the server requires a key; then restart the "
            "proxy."
        )

    def require_configured(self) -> None:
        """Raise `LLMNotConfigured` (503) unless both a base URL and a model are set."""
        if not self.configured:
            raise LLMNotConfigured(self.not_configured_message())

    async def complete_json(
        self,
        messages: list[Message],
        reply_model: type[ReplyT],
        *,
        context: dict[str, Any] | None = None,
        temperature: float = 0.4,
    ) -> ReplyT:
        """Ask the model, parse its JSON object into `reply_model`; one corrective retry.

        `context` is handed to the model's validators (`ValidationInfo.context`), so a reply
        can be checked against the request (how many prompts, which scene names).
        """
        self.require_configured()
        conversation = list(messages)
        last_error = ""
        for attempt in (1, 2):
            content = await self._chat(conversation, temperature)
            try:
                data = extract_json_object(content)
                return reply_model.model_validate(data, context=context)
            except ReplyNotUsable as exc:
                last_error = str(exc)
            except ValidationError as exc:
                last_error = describe_validation_error(exc)
            log.info(
                "LLM reply attempt %d did not fit %s: %s", attempt, reply_model.__name__, last_error
            )
            conversation = [
                *conversation,
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": (
                        f"Your reply could not be used: {last_error}. Answer again with only "
                        "the JSON object described in the instructions, corrected."
                    ),
                },
            ]
        raise LLMError(
            f"The language model '{self.model}' at {self.url} twice returned a reply that is "
            f"not the JSON we asked for ({last_error}). Try again, or use a stronger model "
            f"(LLM_MODEL). Its last reply was: {clip(content) or '(empty)'}",
            model_reply=clip(content),
        )

    async def _chat(self, messages: list[Message], temperature: float) -> str:
        """One chat completion; returns the message text."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "stream": False,
        }
        if self._json_mode:
            response = await self._post({**body, "response_format": {"type": "json_object"}})
            if response.status_code == 400:
                # Some servers (older vLLM, LM Studio, many proxies) refuse `response_format`;
                # the instructions already ask for JSON, so ask once more without it.
                log.info(
                    "%s refused response_format (%s); retrying without it",
                    self.url,
                    clip(response.text, 200),
                )
                response = await self._post(body)
                if response.status_code < 300:
                    self._json_mode = False
        else:
            response = await self._post(body)
        self._raise_for_status(response)
        return self._message_text(response)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        url = self.url
        assert url is not None
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        async with self._slots:
            started = time.monotonic()
            try:
                response = await self._http.post(
                    url, json=body, headers=headers, timeout=httpx.Timeout(self.timeout_s)
                )
            except httpx.TimeoutException as exc:
                raise LLMError(
                    f"The language model server at {url} did not answer within "
                    f"{self.timeout_s:g} s ({type(exc).__name__}). The model may still be "
                    "loading or the server may be overloaded; try again, or raise "
                    "llm_timeout_s."
                ) from exc
            except httpx.ConnectError as exc:
                raise LLMError(
                    f"Could not connect to the language model server at {url} "
                    f"({str(exc) or 'connection refused'}). Check that it is running and "
                    "that LLM_BASE_URL points at it."
                ) from exc
            except httpx.HTTPError as exc:
                raise LLMError(
                    f"The request to the language model server at {url} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        log.debug(
            "LLM %s answered %d in %.2f s", url, response.status_code, time.monotonic() - started
        )
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code < 300:
            return
        said = clip(response.text, 300) or "(empty body)"
        url = self.url
        if code in (401, 403):
            hint = "check LLM_API_KEY"
        elif code == 404:
            hint = (
                f"check LLM_BASE_URL (most servers expect it to end in /v1) and that the model "
                f"'{self.model}' exists there (LLM_MODEL)"
            )
        elif code == 429:
            hint = "the server is rate limiting; try again later or lower llm_max_concurrency"
        elif code >= 500:
            hint = "the server failed; see its log"
        else:
            hint = "the server rejected the request"
        raise LLMError(
            f"The language model server at {url} answered HTTP {code}: {hint}. It said: {said}",
            upstream_status=code,
        )

    def _message_text(self, response: httpx.Response) -> str:
        try:
            payload = response.json()
            message = payload["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(
                f"The server at {self.url} answered something that is not an OpenAI-style "
                f"chat completion (no choices[0].message): {clip(response.text, 300)}"
            ) from exc
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts, as some servers send them
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content if isinstance(content, str) else ""
