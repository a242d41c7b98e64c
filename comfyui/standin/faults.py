"""Faults on demand, and the ``/_standin/...`` control routes that set them.

These routes are not part of ComfyUI: they let tests (and a person trying the proxy) make the
stand-in fail the ways a real ComfyUI fails. They are registered without the ``/api`` alias.

    GET    /_standin/state                 queue, history size, sockets, running node, faults,
                                           step_seconds, timing profile and speed
    POST   /_standin/faults                {"raise"|"node"?: {...}, "oom"?: {...}, "slow"?: {...},
                                            "prompt_delay"?: {...}, "exit"?: {...},
                                            "http_error"?: {...}, "slow_route"?: {...}}
    POST   /_standin/faults/node           {"class_type", "message"?, "exception_type"?, "times"?}
    POST   /_standin/faults/oom            {"class_type"? = "KSampler", "message"?, "times"?}
    POST   /_standin/faults/slow           {"class_type", "seconds", "times"?}
    POST   /_standin/faults/prompt_delay   {"seconds"}
    POST   /_standin/faults/exit           {"after_step", "exit_code"? = 1}
    POST   /_standin/faults/http_error     {"path", "method"? = "POST", "status"? = 500, "times"?}
    POST   /_standin/faults/slow_route     {"path", "method"? = "GET", "seconds", "times"?}
    DELETE /_standin/faults                clear all faults
    POST   /_standin/websockets/drop       {"mode"? = "abort" | "close"} (alias: drop_websockets)
    POST   /_standin/reset                 empty queue and history, number 0, as after a restart
    POST   /_standin/step_seconds          {"seconds"} (no effect under a timing profile)
    GET    /_standin/executed              every prompt the worker took, in order, with its
                                           client id and filename prefixes (kept across
                                           resets and history deletes)

``times`` is how many runs of that class the fault hits (default 1; ``null`` = every run).
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import StandinServer

OOM_TYPE_NAME = "torch.OutOfMemoryError"
OOM_DEFAULT_MESSAGE = "Allocation on device "
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a "
    "large number."
)

_BUILTIN_EXCEPTIONS = {
    name: value
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception)
}
_SYNTHESIZED: dict[str, type[Exception]] = {}
_SYNTH_LOCK = threading.Lock()


def exception_class(type_name: str) -> type[Exception]:
    """The builtin exception of that name, or a RuntimeError subclass named ``module.Qual``."""
    if type_name in _BUILTIN_EXCEPTIONS:
        return _BUILTIN_EXCEPTIONS[type_name]
    module, _, qualname = type_name.rpartition(".")
    if not module or not qualname.isidentifier():
        raise ValueError(f"exception_type must be a builtin name or 'module.Name': {type_name!r}")
    with _SYNTH_LOCK:
        if type_name not in _SYNTHESIZED:
            cls = type(qualname, (RuntimeError,), {"__module__": module, "__qualname__": qualname})
            _SYNTHESIZED[type_name] = cls
        return _SYNTHESIZED[type_name]


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, exception_class(OOM_TYPE_NAME))


@dataclass
class NodeFault:
    """A fault hitting every run of one node class: ``raise`` (incl. OOM) or ``slow``."""

    kind: str
    class_type: str
    times: int | None
    message: str = ""
    exception_type: str = "RuntimeError"
    seconds: float = 0.0

    def make_exception(self) -> Exception:
        return exception_class(self.exception_type)(self.message)


# What aiohttp answers when a handler raises: the body a client meets on a ComfyUI bug.
AIOHTTP_500_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


@dataclass
class HttpFault:
    """The next request(s) to one faithful route answer an HTTP error instead (`status`), or
    answer normally but `delay_s` later (`status` None)."""

    method: str
    path: str  # without the /api prefix
    status: int | None
    times: int | None
    delay_s: float = 0.0


class Faults:
    """The armed faults, shared by the control routes (loop) and the worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._node: list[NodeFault] = []
        self._http: list[HttpFault] = []
        self.prompt_delay_s = 0.0
        self._exit_after_step: int | None = None
        self._exit_code = 1

    def add(self, fault: NodeFault) -> None:
        with self._lock:
            self._node.append(fault)

    def take(self, class_type: str) -> list[NodeFault]:
        """The faults for one run of ``class_type``, each using up one of its ``times``."""
        with self._lock:
            hits = [f for f in self._node if f.class_type == class_type]
            for fault in hits:
                if fault.times is not None:
                    fault.times -= 1
            self._node = [f for f in self._node if f.times is None or f.times > 0]
            return hits

    def add_http(self, fault: HttpFault) -> None:
        with self._lock:
            self._http.append(fault)

    def take_http(self, method: str, path: str) -> HttpFault | None:
        """The fault hitting this request (using up one of its ``times``), if any."""
        path = path.removeprefix("/api") or "/"
        with self._lock:
            for fault in self._http:
                if fault.method == method and fault.path == path:
                    if fault.times is not None:
                        fault.times -= 1
                    self._http = [f for f in self._http if f.times is None or f.times > 0]
                    return fault
        return None

    def arm_exit(self, after_step: int, exit_code: int) -> None:
        with self._lock:
            self._exit_after_step, self._exit_code = after_step, exit_code

    def take_exit(self, step: int) -> int | None:
        """The exit code if the process must die after this sampler step (fires once)."""
        with self._lock:
            if self._exit_after_step is None or step != self._exit_after_step:
                return None
            self._exit_after_step = None
            return self._exit_code

    def clear(self) -> None:
        with self._lock:
            self._node.clear()
            self._http.clear()
            self.prompt_delay_s = 0.0
            self._exit_after_step = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "node": [asdict(f) for f in self._node],
                "http": [asdict(f) for f in self._http],
                "prompt_delay_s": self.prompt_delay_s,
                "exit_after_step": self._exit_after_step,
            }


# --- control routes -------------------------------------------------------------------------


class _BadBody(Exception):
    pass


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise _BadBody(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadBody("body must be a JSON object")
    return body


def _number(body: dict[str, Any], name: str, *, minimum: float = 0) -> float:
    if name not in body:
        raise _BadBody(f"'{name}' is required")
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise _BadBody(f"'{name}' must be a number >= {minimum}")
    return float(value)


def _times(body: dict[str, Any]) -> int | None:
    times = body.get("times", 1)
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise _BadBody("'times' must be a positive integer or null (every run)")
    return times


def _class_type(body: dict[str, Any], server: StandinServer, default: str | None = None) -> str:
    class_type = body.get("class_type", default)
    if class_type not in server.schemas:
        raise _BadBody(f"'class_type' must be one of {server.schemas.class_names}")
    return class_type


_Arm = Callable[[], None]


def _fault_parsers(server: StandinServer) -> dict[str, Callable[[dict[str, Any]], _Arm]]:
    """Fault kind -> a parser of its body that returns how to arm it (nothing armed yet)."""
    faults = server.faults

    def node(body: dict[str, Any]) -> _Arm:
        class_type = _class_type(body, server)
        exception_type = str(body.get("exception_type", "RuntimeError"))
        try:
            exception_class(exception_type)
        except ValueError as exc:
            raise _BadBody(str(exc)) from None
        message = str(body.get("message", f"stand-in fault injected into {class_type}"))
        fault = NodeFault("raise", class_type, _times(body), message, exception_type)
        return lambda: faults.add(fault)

    def oom(body: dict[str, Any]) -> _Arm:
        class_type = _class_type(body, server, default="KSampler")
        message = str(body.get("message", OOM_DEFAULT_MESSAGE))
        fault = NodeFault("raise", class_type, _times(body), message, OOM_TYPE_NAME)
        return lambda: faults.add(fault)

    def slow(body: dict[str, Any]) -> _Arm:
        class_type = _class_type(body, server)
        fault = NodeFault("slow", class_type, _times(body), seconds=_number(body, "seconds"))
        return lambda: faults.add(fault)

    def prompt_delay(body: dict[str, Any]) -> _Arm:
        seconds = _number(body, "seconds")
        return lambda: setattr(faults, "prompt_delay_s", seconds)

    def exit_after(body: dict[str, Any]) -> _Arm:
        after_step = int(_number(body, "after_step", minimum=1))
        exit_code = body.get("exit_code", 1)
        if isinstance(exit_code, bool) or not isinstance(exit_code, int):
            raise _BadBody("'exit_code' must be an integer")
        return lambda: faults.arm_exit(after_step, exit_code)

    def route(body: dict[str, Any], default_method: str) -> tuple[str, str]:
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("/_standin"):
            raise _BadBody("'path' must be a ComfyUI route such as '/prompt'")
        return str(body.get("method", default_method)).upper(), path.removeprefix("/api") or "/"

    def http_error(body: dict[str, Any]) -> _Arm:
        method, path = route(body, "POST")
        status = body.get("status", 500)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise _BadBody("'status' must be an HTTP error status (400-599)")
        fault = HttpFault(method, path, status, _times(body))
        return lambda: faults.add_http(fault)

    def slow_route(body: dict[str, Any]) -> _Arm:
        method, path = route(body, "GET")
        fault = HttpFault(method, path, None, _times(body), delay_s=_number(body, "seconds"))
        return lambda: faults.add_http(fault)

    return {
        "node": node,
        "raise": node,
        "oom": oom,
        "slow": slow,
        "prompt_delay": prompt_delay,
        "exit": exit_after,
        "http_error": http_error,
        "slow_route": slow_route,
    }


def control_routes(server: StandinServer) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of every control route."""
    faults = server.faults
    parsers = _fault_parsers(server)

    def handler(fn: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except _BadBody as exc:
                return web.json_response({"error": str(exc)}, status=400)

        return wrapped

    def one_fault(kind: str) -> Any:
        async def arm(request: web.Request) -> web.Response:
            parsers[kind](await _body(request))()
            return web.json_response({"faults": faults.snapshot()})

        return arm

    async def several_faults(request: web.Request) -> web.Response:
        """``{"raise": {...}, "oom": {...}, ...}``: all valid, or nothing is armed."""
        body = await _body(request)
        unknown = sorted(set(body) - set(parsers))
        if unknown:
            raise _BadBody(f"unknown fault kind(s) {unknown}; known: {sorted(parsers)}")
        arms = []
        for kind, part in body.items():
            if not isinstance(part, dict):
                raise _BadBody(f"'{kind}' must be an object")
            arms.append(parsers[kind](part))
        for arm in arms:
            arm()
        return web.json_response({"faults": faults.snapshot()})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(server.state())

    async def clear_faults(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response({"faults": faults.snapshot()})

    async def drop_websockets(request: web.Request) -> web.Response:
        mode = (await _body(request)).get("mode", "abort")
        if mode not in ("abort", "close"):
            raise _BadBody("'mode' must be 'abort' or 'close'")
        return web.json_response({"dropped": await server.hub.drop_all(mode)})

    async def reset(request: web.Request) -> web.Response:
        await server.restart()
        return web.json_response(server.state())

    async def executed(request: web.Request) -> web.Response:
        return web.json_response({"executed": server.executor.executions.snapshot()})

    async def step_seconds(request: web.Request) -> web.Response:
        server.executor.step_seconds = _number(await _body(request), "seconds")
        return web.json_response({"step_seconds": server.executor.step_seconds})

    routes = [
        ("GET", "/_standin/state", state),
        ("POST", "/_standin/faults", several_faults),
        ("POST", "/_standin/faults/node", one_fault("node")),
        ("POST", "/_standin/faults/oom", one_fault("oom")),
        ("POST", "/_standin/faults/slow", one_fault("slow")),
        ("POST", "/_standin/faults/prompt_delay", one_fault("prompt_delay")),
        ("POST", "/_standin/faults/exit", one_fault("exit")),
        ("POST", "/_standin/faults/http_error", one_fault("http_error")),
        ("POST", "/_standin/faults/slow_route", one_fault("slow_route")),
        ("DELETE", "/_standin/faults", clear_faults),
        ("POST", "/_standin/websockets/drop", drop_websockets),
        ("POST", "/_standin/drop_websockets", drop_websockets),
        ("POST", "/_standin/reset", reset),
        ("POST", "/_standin/step_seconds", step_seconds),
        ("GET", "/_standin/executed", executed),
    ]
    return [(method, path, handler(fn)) for method, path, fn in routes]


def http_fault_middleware(faults: Faults) -> Any:
    """Applies an armed ``http_error`` or ``slow_route`` fault (control routes exempt)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith("/_standin/"):
            fault = faults.take_http(request.method, request.path)
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status is not None:
                if fault.status == 500:
                    text = AIOHTTP_500_TEXT
                else:  # aiohttp's plain error body, e.g. "404: Not Found"
                    text = f"{fault.status}: {HTTPStatus(fault.status).phrase}"
                return web.Response(status=fault.status, text=text)
        return await handler(request)

    return middleware
