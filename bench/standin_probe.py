"""The stand-in ComfyUI, instrumented for the benchmarks: its own command line plus
``--record FILE``, where it appends one JSON line per event the benchmarks need.

    python -m bench.standin_probe --record FILE <the stand-in's own flags>

- ``{"kind": "sent", "type": "progress", "prompt_id", "node", "value", "max", "t"}``: the
  moment (``time.monotonic()``, shared by every process on Linux) a ``progress`` message is
  handed to a websocket, for the latency benchmark;
- ``{"kind": "done", "prompt_id", "messages"}``: a prompt's ``status.messages`` (its
  ``execution_start`` / ``execution_success`` timestamps, as ``/history`` shows them) when it
  ends, because the proxy deletes a completed prompt's history entry soon after.

Only instance attributes of the running server are wrapped (``hub.send``,
``queue.task_done``); nothing in ``comfyui/`` is changed, and without ``--record`` this is the
plain stand-in.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import comfyui.standin.__main__ as cli


class Recorder:
    """JSON lines, appended from the loop and the worker thread alike."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def instrument(server: Any, recorder: Recorder) -> None:
    hub, queue = server.hub, server.queue
    send: Callable[..., Any] = hub.send
    task_done: Callable[..., Any] = queue.task_done

    @functools.wraps(send)
    async def timed_send(event: str, data: Any, sid: str | None = None) -> None:
        if event == "progress" and isinstance(data, dict):
            recorder.write(
                {
                    "kind": "sent",
                    "type": event,
                    "t": time.monotonic(),
                    **{k: data.get(k) for k in ("prompt_id", "node", "value", "max")},
                }
            )
        await send(event, data, sid)

    @functools.wraps(task_done)
    def recorded_done(task: Any, *args: Any, **kwargs: Any) -> Any:
        status = next((a for a in args if isinstance(a, dict) and "messages" in a), None)
        recorder.write(
            {
                "kind": "done",
                "prompt_id": getattr(task, "prompt_id", None),
                "messages": (status or {}).get("messages", []),
            }
        )
        return task_done(task, *args, **kwargs)

    hub.send = timed_send
    queue.task_done = recorded_done


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--record")
    ours, rest = parser.parse_known_args(argv)
    if ours.record:
        out = open(ours.record, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
        recorder = Recorder(out)
        original = cli.start_standin

        async def start_instrumented(**kwargs: Any) -> Any:
            handle = await original(**kwargs)
            instrument(handle.server, recorder)
            return handle

        cli.start_standin = start_instrumented  # type: ignore[assignment]
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
