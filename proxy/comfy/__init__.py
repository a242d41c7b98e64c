"""Everything that crosses to ComfyUI: HTTP (`client`), the websocket (`socket`), typed results
(`models`). Knows nothing of jobs or HTTP routes."""

from proxy.comfy.client import ComfyClient
from proxy.comfy.models import (
    ComfyEvent,
    ExecutionFailure,
    HistoryEntry,
    OutputFile,
    PromptAccepted,
    QueueState,
)
from proxy.comfy.socket import BackendSocket, SocketState

__all__ = [
    "BackendSocket",
    "ComfyClient",
    "ComfyEvent",
    "ExecutionFailure",
    "HistoryEntry",
    "OutputFile",
    "PromptAccepted",
    "QueueState",
    "SocketState",
]
