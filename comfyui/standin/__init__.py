"""A stand-in for ComfyUI 0.3.64: same HTTP + websocket protocol, synthetic test-pattern videos.

Used by the tests and by the no-GPU demo in place of a real ComfyUI. It imports nothing from
``proxy``; the two meet only over HTTP and websockets.
"""

from .paths import DataDirs, write_placeholder_models
from .server import StandinHandle, start_standin

__all__ = ["DataDirs", "StandinHandle", "start_standin", "write_placeholder_models"]
