"""How an API surface names a workflow's parameters: the one translator every router uses.

A surface's request model is the workflow's declared model under the surface's names (a
rename map, client field → workflow parameter), so a parameter added to a workflow appears on
every surface with its type, range, default and description. Values reach the core in the
workflow's names, and a validation error from the core comes back naming the field the client
sent.

    FASTWAN = Surface("fastwan")                                  # the workflow's own names
    WAN21 = Surface("wan21", {"num_frames": "length", "guidance_scale": "cfg", ...})
    Body = WAN21.model(flow, "TextToVideo", exclude=..., fields={...})   # pydantic model
    values = WAN21.values(body)                                   # {"length": 61, "cfg": 1.0}
    with WAN21.errors(): await jobs.create(...)                   # InvalidInput("num_frames")
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from proxy.auth import Principal
from proxy.errors import InvalidInput
from proxy.jobs.models import Job
from proxy.jobs.service import JobService
from proxy.workflows import Workflow


class CleanText(BaseModel):
    """Base of every request body: no field may hold a NUL character."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if has_nul(value):
            raise ValueError("contains a NUL character (\\u0000), which no field takes")
        return value


class SurfaceBody(CleanText):
    """Base of every derived request model: unknown fields are refused by name."""

    model_config = ConfigDict(extra="forbid")
    # Defaults this surface documents instead of the workflow's (client names): sent to the
    # core when the client omits the field.
    surface_defaults: ClassVar[dict[str, Any]] = {}


def has_nul(value: Any) -> bool:
    """Whether a request value holds a NUL anywhere (C-string libraries truncate at it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


@dataclass(frozen=True)
class Surface:
    name: str  # stored on each job it creates ("fastwan", "wan21", ...)
    renames: Mapping[str, str] = field(default_factory=dict)  # client field → parameter

    def client_name(self, param: str) -> str:
        """The name this surface gives a workflow parameter."""
        for client, target in self.renames.items():
            if target == param:
                return client
        return param

    def param_name(self, client: str) -> str:
        return self.renames.get(client, client)

    def model(
        self,
        workflow: Workflow,
        name: str,
        *,
        doc: str,
        exclude: Collection[str] = (),
        fields: Mapping[str, tuple[Any, Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        base: type[BaseModel] = SurfaceBody,
    ) -> type[BaseModel]:
        """The workflow's parameters under this surface's names, less `exclude`, with
        `fields` added or replacing derived ones and `defaults` shown instead of the
        workflow's (all in client names; the type and range stay the workflow's)."""
        derived: dict[str, Any] = {
            self.client_name(param): spec
            for param, spec in workflow.fields().items()
            if self.client_name(param) not in exclude
        }
        for name, default in (defaults or {}).items():
            annotation, info = derived[name]
            derived[name] = (annotation, Field(default, description=info.description))
        derived.update(fields or {})
        model: type[BaseModel] = create_model(name, __base__=base, __doc__=doc, **derived)
        model.surface_defaults = dict(defaults or {})  # type: ignore[attr-defined]
        return model

    def values(
        self, body: BaseModel | Mapping[str, Any], *, skip: Collection[str] = ()
    ) -> dict[str, Any]:
        """What the client gave, in the workflow's names (null counts as not given); for an
        omitted field the surface's own default where it has one, else nothing (the core
        applies the workflow's)."""
        if isinstance(body, BaseModel):
            data = {
                **getattr(body, "surface_defaults", {}),
                **body.model_dump(exclude_unset=True),
            }
        else:
            data = dict(body)
        return {
            self.param_name(key): value
            for key, value in data.items()
            if value is not None and key not in skip
        }

    def translate(self, exc: InvalidInput) -> InvalidInput:
        """The same error, naming the field as this surface's client sent it."""
        head, dot, rest = exc.field.partition(".")
        client = self.client_name(head) + dot + rest
        if client == exc.field:
            return exc
        return InvalidInput(client, exc.message.removeprefix(f"{exc.field}: "))

    async def create_job(
        self,
        jobs: JobService,
        workflow: str,
        values: dict[str, Any],
        caller: Principal,
        *,
        max_active: int | None,
        **options: Any,
    ) -> Job:
        """A job from this surface, owned by the caller; errors name the client's fields."""
        with self.errors():
            return await jobs.create(
                workflow,
                values,
                surface=self.name,
                client_key=caller.owner,
                max_active=max_active,
                **options,
            )

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Core validation errors inside the block name this surface's fields."""
        try:
            yield
        except InvalidInput as exc:
            translated = self.translate(exc)
            if translated is exc:
                raise
            raise translated from None
