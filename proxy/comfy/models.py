"""Typed shapes of what ComfyUI 0.3.64 sends (see comfyui-reference/protocol.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")


class PromptAccepted(BaseModel):
    """The 200 answer of POST /prompt. `node_errors` may be non-empty (outputs dropped)."""

    prompt_id: str
    number: float
    node_errors: dict[str, Any] = Field(default_factory=dict)


class OutputFile(BaseModel):
    """One file named in a history entry's outputs."""

    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    animated: bool = False
    key: str = "images"

    @property
    def is_video(self) -> bool:
        return self.animated and self.filename.lower().endswith(VIDEO_SUFFIXES)


class ExecutionFailure(BaseModel):
    """What `execution_error` / `execution_interrupted` said."""

    node_id: str | None = None
    node_type: str | None = None
    exception_type: str = ""
    exception_message: str = ""
    interrupted: bool = False

    def describe(self) -> str:
        where = f"node {self.node_id} ({self.node_type})" if self.node_id else "the workflow"
        if self.interrupted:
            return f"Interrupted in {where}"
        text = self.exception_message.strip()
        if "OutOfMemory" in self.exception_type or "out of memory" in text.lower():
            return (
                f"ComfyUI ran out of GPU memory in {where}. Lower width, height or length, "
                f"or free the GPU. ({text.splitlines()[0] if text else self.exception_type})"
            )
        kind = f"{self.exception_type}: " if self.exception_type else ""
        return f"ComfyUI failed in {where}: {kind}{text}"


class HistoryEntry(BaseModel):
    prompt_id: str
    status_str: str | None = None
    completed: bool = False
    outputs: list[OutputFile] = Field(default_factory=list)
    failure: ExecutionFailure | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_str == "success" and self.completed

    @classmethod
    def parse(cls, prompt_id: str, entry: dict[str, Any]) -> HistoryEntry:
        status = entry.get("status") or {}
        failure = None
        for event, data in status.get("messages") or []:
            if event in ("execution_error", "execution_interrupted"):
                failure = ExecutionFailure(
                    node_id=data.get("node_id"),
                    node_type=data.get("node_type"),
                    exception_type=data.get("exception_type", ""),
                    exception_message=data.get("exception_message", ""),
                    interrupted=event == "execution_interrupted",
                )
        return cls(
            prompt_id=prompt_id,
            status_str=status.get("status_str"),
            completed=bool(status.get("completed")),
            outputs=parse_outputs(entry.get("outputs") or {}),
            failure=failure,
        )


def parse_outputs(outputs: dict[str, Any]) -> list[OutputFile]:
    """Files from a history `outputs` map (or an `executed` message's `output`).

    Videos arrive under `images` with `animated: [true]`; custom nodes use `gifs`/`videos`.
    """
    files = []
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        animated = any(bool(a) for a in ui.get("animated") or [])
        for key in ("images", "gifs", "videos", "audio"):
            for item in ui.get(key) or []:
                if isinstance(item, dict) and item.get("filename"):
                    files.append(
                        OutputFile(
                            node_id=str(node_id),
                            filename=item["filename"],
                            subfolder=item.get("subfolder", ""),
                            type=item.get("type", "output"),
                            animated=animated or key in ("gifs", "videos"),
                            key=key,
                        )
                    )
    return files


class QueueState(BaseModel):
    running: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    @property
    def length(self) -> int:
        return len(self.running) + len(self.pending)


class ComfyEvent(BaseModel):
    """One websocket text message, or a synthetic event of our own (`type` starting `_`)."""

    type: str
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return str(value) if value is not None else None


# Synthetic events the socket emits to every subscriber.
RECONNECTED = "_reconnected"
DISCONNECTED = "_disconnected"
