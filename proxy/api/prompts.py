"""Prompt tools routes: the seed-004 prompt management API, plus status and scene drafting.

Sessions: `X-Session-Id` header, else the `prompt_session` cookie, else `default`. A browser
that arrives with neither gets a fresh session and the cookie, so two people using the web
UI never share a history; scripts that send neither share `default`, as seed clients expect.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.api.auth import Caller
from proxy.api.deps import SceneSaverDep, ToolsDep
from proxy.api.surface import CleanText
from proxy.auth import Principal
from proxy.batches.service import MAX_SCENES
from proxy.errors import InvalidInput
from proxy.prompts.service import DEFAULT_SCENARIOS, ToolsStatus
from proxy.prompts.store import DEFAULT_SESSION, HistoryEntry, new_session_id

router = APIRouter(prefix="/api", tags=["prompt tools"])

SESSION_HEADER = "X-Session-Id"
SESSION_COOKIE = "prompt_session"
SESSION_COOKIE_MAX_AGE_S = 30 * 24 * 3600

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


async def session_id(
    request: Request,
    response: Response,
    caller: Caller,
    header: Annotated[
        str | None,
        Header(
            alias=SESSION_HEADER,
            description="The prompt session to use; without it, the cookie or `default`.",
        ),
    ] = None,
    cookie: Annotated[
        str | None, Cookie(alias=SESSION_COOKIE, description="Set for browsers.")
    ] = None,
) -> str:
    """The prompt session this request belongs to (see the module docstring); with API keys,
    each key has its own sessions (the same name under two keys is two sessions)."""
    return _own(caller, _named_session(request, response, header, cookie))


def _own(caller: Principal, name: str) -> str:
    if caller.via == "open":
        return name
    digest = hashlib.sha256(f"{caller.owner}\0{name}".encode()).hexdigest()[:40]
    return f"k{digest}"


def _named_session(
    request: Request, response: Response, header: str | None, cookie: str | None
) -> str:
    if header is not None:
        header = header.strip()
        if not _SESSION_ID.match(header):
            raise InvalidInput(
                SESSION_HEADER,
                "use 1 to 64 letters, digits, '_', '-', '.' or ':', starting with a letter "
                "or digit",
            )
        response.headers[SESSION_HEADER] = header
        return header
    if cookie and _SESSION_ID.match(cookie):
        response.headers[SESSION_HEADER] = cookie
        return cookie
    # Browsers send Sec-Fetch-Mode on every request (pages cannot set or remove it) and HTTP
    # libraries don't, so only browsers get a new session: they keep cookies, scripts may not.
    if "sec-fetch-mode" in request.headers:
        fresh = new_session_id()
        response.set_cookie(
            SESSION_COOKIE,
            fresh,
            max_age=SESSION_COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            path="/",
        )
        response.headers[SESSION_HEADER] = fresh
        return fresh
    response.headers[SESSION_HEADER] = DEFAULT_SESSION
    return DEFAULT_SESSION


Tools = ToolsDep


class _Request(CleanText):
    # "   " is as empty as "" for a prompt.
    model_config = ConfigDict(str_strip_whitespace=True)


SessionId = Annotated[str, Depends(session_id)]


class InitializeRequest(_Request):
    prompt: str = Field(min_length=1, max_length=4000, description="The video prompt to refine.")


class PromptStateResponse(BaseModel):
    parameters: dict[str, Any] = Field(description="The visual decisions the prompt makes.")
    prompt: str
    changes: list[str] = Field(description="What this step changed (empty for initialize).")


class UpdateRequest(_Request):
    user_request: str = Field(
        min_length=1, max_length=2000, description="The change wanted, in plain words."
    )


class EnhanceRequest(_Request):
    rough_prompt: str = Field(min_length=1, max_length=4000)


class EnhanceResponse(BaseModel):
    original_prompt: str
    enhanced_prompt: str


class VariationsRequest(_Request):
    selected_indices: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=50, description="Indices into this session's history."
    )
    total_count: int = Field(3, ge=1, le=12, description="How many new prompts to write.")


class VariationsResponse(BaseModel):
    prompts: list[str]
    selected_indices: list[int]


class HistoryResponse(BaseModel):
    history: list[HistoryEntry]


class DraftScenesRequest(_Request):
    brief: str = Field(min_length=1, max_length=8000, description="What the video is about.")
    scenes: list[str] | Annotated[int, Field(ge=1, le=MAX_SCENES)] | None = Field(
        None,
        description=(
            "Scene names in order, or how many scenes to draft (named scene_1, scene_2, ...). "
            "Default: hook, problem, solution, cta."
        ),
    )
    count: int | None = Field(
        None, ge=1, le=MAX_SCENES, description="Same as giving `scenes` a number."
    )

    @field_validator("scenes")
    @classmethod
    def _names(cls, value: list[str] | int | None) -> list[str] | int | None:
        if not isinstance(value, list):
            return value
        names = [name.strip() for name in value]
        if not 1 <= len(names) <= MAX_SCENES:
            raise ValueError(f"give 1 to {MAX_SCENES} scene names")
        if any(not n or len(n) > 40 for n in names):
            raise ValueError("each scene name is 1 to 40 characters")
        if len({n.casefold() for n in names}) != len(names):
            raise ValueError("scene names must be unique")
        return names

    def scenario_names(self) -> list[str]:
        given = len(self.scenes) if isinstance(self.scenes, list) else self.scenes
        if self.count is not None and given is not None and given != self.count:
            raise InvalidInput("count", f"{self.count} does not match the {given} scenes given")
        if isinstance(self.scenes, list):
            return list(self.scenes)
        count = self.scenes if isinstance(self.scenes, int) else self.count
        if count is None:
            return list(DEFAULT_SCENARIOS)
        return [f"scene_{n}" for n in range(1, count + 1)]


class SceneDraftOut(BaseModel):
    scenario: str
    description: str


class DraftScenesResponse(BaseModel):
    scenes: list[SceneDraftOut]
    session_id: str | None = Field(
        description="The scene session the drafts were stored in, or null if none was made."
    )


@router.get("/prompt-tools/status", response_model=ToolsStatus)
async def status(tools: Tools) -> ToolsStatus:
    """Whether a language model is configured for the prompt tools, and which one."""
    return tools.status()


@router.post("/initialize", response_model=PromptStateResponse)
async def initialize(body: InitializeRequest, tools: Tools, sid: SessionId) -> PromptStateResponse:
    """Start refining a prompt: extract its parameters and make it the current prompt."""
    state = await tools.initialize(sid, body.prompt)
    return PromptStateResponse(**state.model_dump())


@router.post("/update", response_model=PromptStateResponse)
async def update(body: UpdateRequest, tools: Tools, sid: SessionId) -> PromptStateResponse:
    """Change the current prompt as asked in plain words; returns what changed."""
    state = await tools.update(sid, body.user_request)
    return PromptStateResponse(**state.model_dump())


@router.post("/enhance", response_model=EnhanceResponse)
async def enhance(body: EnhanceRequest, tools: Tools) -> EnhanceResponse:
    """Turn a rough idea into a detailed video prompt."""
    enhanced = await tools.enhance(body.rough_prompt)
    return EnhanceResponse(original_prompt=body.rough_prompt, enhanced_prompt=enhanced)


@router.post("/generate-variations", response_model=VariationsResponse)
async def generate_variations(
    body: VariationsRequest, tools: Tools, sid: SessionId
) -> VariationsResponse:
    """Write new prompts in the spirit of the selected history entries."""
    prompts = await tools.variations(sid, body.selected_indices, body.total_count)
    return VariationsResponse(prompts=prompts, selected_indices=body.selected_indices)


@router.get("/history", response_model=HistoryResponse)
async def history(tools: Tools, sid: SessionId) -> HistoryResponse:
    """Every prompt of this session, oldest first."""
    return HistoryResponse(history=await tools.history(sid))


@router.get("/parameters", response_model=dict[str, Any])
async def parameters(tools: Tools, sid: SessionId) -> dict[str, Any]:
    """The parameters of the session's current prompt (empty before initialize)."""
    return await tools.parameters(sid)


@router.post("/scenes/draft", response_model=DraftScenesResponse)
async def draft_scenes(
    body: DraftScenesRequest, tools: Tools, save: SceneSaverDep
) -> DraftScenesResponse:
    """Draft one video prompt per scene for a brief, stored as a scene session if possible."""
    drafts = await tools.draft_scenes(body.brief, body.scenario_names())
    scenes = [d.model_dump() for d in drafts]
    stored_id = await save(scenes)
    return DraftScenesResponse(scenes=[SceneDraftOut(**s) for s in scenes], session_id=stored_id)
