"""The parameter declaration that sits beside each template (`<name>.params.json`).

A template is exactly what ComfyUI's "Export (API)" writes, so it can be re-exported from the
graph editor at any time; the declaration binds request fields to `(node, input)` slots and
records each slot's class_type, so a re-export that renumbers or replaces a node is caught at
load time instead of silently filling the wrong input.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

ParamType = Literal["string", "int", "float", "bool", "choice", "image", "video"]


class Binding(BaseModel):
    """One graph slot a parameter fills."""

    node: str
    input: str
    class_type: str


class ParamSpec(BaseModel):
    name: str
    type: ParamType
    description: str = ""
    required: bool = False
    default: Any = None
    # A value drawn at random when the request omits it (seeds), then stored on the job.
    random: bool = False
    min: int | float | None = None
    max: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    multiple_of: int | None = None
    # Wan's VAE packs 4 frames per latent step plus the first: lengths must be 4k+1.
    four_k_plus_1: bool = False
    choices: list[Any] | None = None
    advanced: bool = False
    targets: list[Binding] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice needs `choices`")
        return self

    @property
    def is_file(self) -> bool:
        return self.type in ("image", "video")

    def public(self) -> dict[str, Any]:
        """The description clients see in /api/models."""
        data = self.model_dump(exclude={"targets"}, exclude_none=True)
        data["default"] = self.default
        return data


class WorkflowSpec(BaseModel):
    name: str
    title: str
    description: str = ""
    kind: str = "text-to-video"
    # Other names clients may use for this workflow (the seeds' model ids).
    aliases: list[str] = Field(default_factory=list)
    output_node: str
    # The proxy sets SaveVideo's prefix per job, so outputs name the job that made them.
    filename_prefix: Binding | None = None
    params: list[ParamSpec]
