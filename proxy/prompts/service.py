"""The prompt tools: extract, update, enhance, vary and draft video prompts with a language model.

`PromptTools` is created in the app lifespan and read by `proxy.api.prompts` from
`app.state.prompt_tools`. The reply models below are what the model must return; their
validation errors go back to the model once (see `LLMClient.complete_json`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator

from proxy.db import Database
from proxy.errors import Conflict, InvalidInput
from proxy.prompts import instructions
from proxy.prompts.instructions import MAX_PROMPT_WORDS
from proxy.prompts.llm import LLMClient
from proxy.prompts.store import HistoryEntry, PromptSession, PromptSessionStore
from proxy.settings import Settings

# The scenes of a seed-003 scene session, in order.
DEFAULT_SCENARIOS = ("hook", "problem", "solution", "cta")

INITIAL_DESCRIPTION = "Initial prompt"


def _video_prompt(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ValueError("the prompt is empty")
    words = len(text.split())
    if words > MAX_PROMPT_WORDS:
        raise ValueError(f"the prompt has {words} words; keep it under {instructions.TARGET_WORDS}")
    return text


VideoPrompt = Annotated[str, AfterValidator(_video_prompt)]


def _parameters(value: dict[str, Any]) -> dict[str, Any]:
    cleaned = {str(k).strip(): v for k, v in value.items() if str(k).strip()}
    if not cleaned:
        raise ValueError("parameters is empty; name at least the subject and the scene")
    return cleaned


Parameters = Annotated[dict[str, Any], AfterValidator(_parameters)]


class InitializeReply(BaseModel):
    parameters: Parameters


class UpdateReply(BaseModel):
    parameters: Parameters
    prompt: VideoPrompt
    changes: list[str] = Field(default_factory=list)
    summary: str | None = None

    @field_validator("changes")
    @classmethod
    def _clean_changes(cls, value: list[str]) -> list[str]:
        return [c.strip() for c in value if c.strip()]


class EnhanceReply(BaseModel):
    enhanced_prompt: VideoPrompt


class VariationsReply(BaseModel):
    prompts: list[VideoPrompt]

    @field_validator("prompts")
    @classmethod
    def _enough(cls, value: list[str], info: ValidationInfo) -> list[str]:
        wanted = (info.context or {}).get("count")
        if wanted is not None:
            if len(value) < wanted:
                raise ValueError(f"{len(value)} prompts given, exactly {wanted} are needed")
            value = value[:wanted]
        return value


class SceneDraft(BaseModel):
    """One drafted scene: its name (`hook`, `problem`, ...) and its video prompt."""

    scenario: str
    description: VideoPrompt


class ScenesReply(BaseModel):
    scenes: list[SceneDraft]

    @field_validator("scenes")
    @classmethod
    def _all_named(cls, value: list[SceneDraft], info: ValidationInfo) -> list[SceneDraft]:
        wanted: list[str] | None = (info.context or {}).get("scenarios")
        if wanted is None:
            return value
        by_name = {_norm(s.scenario): s for s in value}
        missing = [name for name in wanted if _norm(name) not in by_name]
        if missing:
            raise ValueError(
                "no scene for "
                + ", ".join(f'"{m}"' for m in missing)
                + "; give one scene per requested name, using the names exactly"
            )
        # The requested order and spelling, whatever the model did with them.
        return [
            SceneDraft(scenario=name, description=by_name[_norm(name)].description)
            for name in wanted
        ]


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name).casefold()


class PromptState(BaseModel):
    """What initialize and update return (the seed's `{parameters, prompt, changes}`)."""

    parameters: dict[str, Any]
    prompt: str
    changes: list[str]


class ToolsStatus(BaseModel):
    configured: bool
    model: str | None
    base_url: str | None
    message: str


class PromptTools:
    """The prompt tools over one language model and one session store."""

    def __init__(self, llm: LLMClient, store: PromptSessionStore) -> None:
        self.llm = llm
        self.store = store

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http: httpx.AsyncClient, db: Database
    ) -> PromptTools:
        return cls(LLMClient.from_settings(settings, http), PromptSessionStore(db))

    def status(self) -> ToolsStatus:
        llm = self.llm
        if llm.configured:
            message = f"Prompt tools use the model '{llm.model}' at {llm.base_url}."
        else:
            message = llm.not_configured_message()
        return ToolsStatus(
            configured=llm.configured, model=llm.model, base_url=llm.base_url, message=message
        )

    async def initialize(self, session_id: str, prompt: str) -> PromptState:
        """Extract parameters from `prompt` and make it the session's current prompt."""
        self.llm.require_configured()
        prompt = " ".join(prompt.split())
        reply = await self.llm.complete_json(
            instructions.initialize_messages(prompt), InitializeReply, temperature=0.2
        )
        entry = HistoryEntry(
            prompt=prompt, parameters=reply.parameters, description=INITIAL_DESCRIPTION
        )
        await self.store.append(session_id, entry)
        return PromptState(parameters=reply.parameters, prompt=prompt, changes=[])

    async def update(self, session_id: str, user_request: str) -> PromptState:
        """Apply a request in plain words to the session's current prompt."""
        self.llm.require_configured()
        session = await self.store.get(session_id)
        if session is None or not session.initialized:
            raise Conflict(
                f"Prompt session '{session_id}' has no prompt yet: call POST /api/initialize "
                'with {"prompt": "..."} first, then /api/update.'
            )
        assert session.prompt is not None and session.parameters is not None
        reply = await self.llm.complete_json(
            instructions.update_messages(session.prompt, session.parameters, user_request),
            UpdateReply,
            temperature=0.4,
        )
        description = (reply.summary or "").strip() or "; ".join(reply.changes) or user_request
        entry = HistoryEntry(
            prompt=reply.prompt, parameters=reply.parameters, description=description[:200]
        )
        await self.store.append(session_id, entry)
        return PromptState(parameters=reply.parameters, prompt=reply.prompt, changes=reply.changes)

    async def enhance(self, rough_prompt: str) -> str:
        """A finished video prompt from a rough idea (sessions are not touched)."""
        self.llm.require_configured()
        reply = await self.llm.complete_json(
            instructions.enhance_messages(rough_prompt.strip()), EnhanceReply, temperature=0.7
        )
        return reply.enhanced_prompt

    async def variations(
        self, session_id: str, selected_indices: list[int], total_count: int
    ) -> list[str]:
        """`total_count` new prompts in the spirit of the selected history entries."""
        self.llm.require_configured()
        session = await self.store.get(session_id)
        history = session.history if session else []
        bad = [i for i in selected_indices if not 0 <= i < len(history)]
        if bad:
            have = (
                f"the history of session '{session_id}' has {len(history)} entries "
                f"(indices 0 to {len(history) - 1})"
                if history
                else f"the history of session '{session_id}' is empty; call /api/initialize first"
            )
            raise InvalidInput(
                "selected_indices",
                f"{', '.join(map(str, bad))} out of range: {have}",
            )
        chosen = list(dict.fromkeys(history[i].prompt for i in selected_indices))
        reply = await self.llm.complete_json(
            instructions.variations_messages(chosen, total_count),
            VariationsReply,
            context={"count": total_count},
            temperature=0.9,
        )
        return reply.prompts

    async def history(self, session_id: str) -> list[HistoryEntry]:
        session = await self.store.get(session_id)
        return session.history if session else []

    async def parameters(self, session_id: str) -> dict[str, Any]:
        session = await self.store.get(session_id)
        return dict(session.parameters or {}) if session else {}

    async def session(self, session_id: str) -> PromptSession | None:
        return await self.store.get(session_id)

    async def draft_scenes(self, brief: str, scenarios: list[str]) -> list[SceneDraft]:
        """One video prompt per named scene, consistent across scenes, for `brief`."""
        self.llm.require_configured()
        reply = await self.llm.complete_json(
            instructions.scenes_messages(brief.strip(), scenarios),
            ScenesReply,
            context={"scenarios": scenarios},
            temperature=0.6,
        )
        return reply.scenes
