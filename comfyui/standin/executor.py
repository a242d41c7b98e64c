"""The prompt worker: one thread that runs queued prompts one at a time, like ComfyUI's.

Per prompt it sends, in ComfyUI's order: ``execution_start``, ``execution_cached``, then per
node ``progress_state`` (running), ``executing``, per sampler step ``progress_state`` and
``progress``, ``executed`` (nodes with UI), ``progress_state`` (finished); cached output nodes
get only ``executed`` and ``progress_state``; then ``execution_success`` (or
``execution_error`` / ``execution_interrupted``), the history entry with its ``status``
broadcast, and ``executing {node: null}``. Without a client_id only ``status``, ``progress``,
``progress_state`` and ``execution_interrupted`` go out, to every socket.

Interrupts are checked before each node's function and at each sampler step, and the flag
is cleared when it fires and when a prompt starts. A simulated restart or shutdown aborts the
running prompt silently (``RunAborted``).

Every prompt the worker takes is also written to ``executions`` (not ComfyUI's: a test's
record of what ran, kept across ``/_standin/reset`` and history deletes; see
``GET /_standin/executed``).

Time: without a timing profile a sampler step takes ``step_seconds`` and every other node as
long as its function. With one (``timing.Profile``), a step takes the profile's time for that
sampler's inputs (``step_seconds`` is then ignored) and a node lasts the profile's time or its
function's own compute time, whichever is longer; that wait sends no message and is not
interruptible (the interrupt fires before the next node), like a long GPU node in ComfyUI.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import nodes
from .cache import NodeCache, is_link
from .faults import OOM_TIPS, Faults, is_out_of_memory
from .graph import DependencyCycleError, ExecutionList
from .hub import Hub
from .paths import DataDirs
from .promptqueue import PromptQueue, Task
from .schemas import Schemas, input_spec
from .timing import Profile
from .validation import full_type_name

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.02


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException: the interrupt flag fired."""


class RunAborted(BaseException):
    """The run must vanish without a message (simulated restart, shutdown, process exit)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def format_value(value: Any) -> Any:
    """How ComfyUI shows an input in ``current_inputs``: primitives as is, the rest as str."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class _Progress:
    """The per-prompt node progress map, re-sent whole on every change (``progress_state``)."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._nodes: dict[str, dict[str, Any]] = {}

    def start(self, node_id: str) -> None:
        self._nodes[node_id] = {"state": "running", "value": 0.0, "max": 1.0}
        self._send()

    def update(self, node_id: str, value: float, total: float) -> None:
        entry = self._nodes.setdefault(node_id, {"state": "running"})
        entry.update(state="running", value=value, max=total)
        self._send()

    def finish(self, node_id: str) -> None:
        entry = self._nodes.setdefault(node_id, {"value": 0, "max": 1})
        entry.update(state="finished", value=entry["max"])
        self._send()

    def _send(self) -> None:
        prompt_id = self._run.prompt_id
        nodes_state = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self._nodes.items()
        }
        self._run.send("progress_state", {"prompt_id": prompt_id, "nodes": nodes_state})


class _Run:
    """One prompt being executed: its target socket, its messages, its progress."""

    def __init__(self, executor: Executor, task: Task) -> None:
        number, prompt_id, prompt, extra_data, outputs = task.item
        self.executor = executor
        self.task = task
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.outputs = outputs
        self.client_id: str | None = extra_data.get("client_id")
        self.status_messages: list[list[Any]] = []
        self.executed: list[str] = []
        self.progress = _Progress(self)

    def send(self, event: str, data: Any) -> None:
        self.executor.hub.send_sync(event, data, self.client_id, epoch=self.task.epoch)

    def add_message(self, event: str, data: dict[str, Any], *, broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        self.status_messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.send(event, data)

    def check_alive(self) -> None:
        if self.executor.stopping or self.task.epoch != self.executor.queue.epoch:
            raise RunAborted()


class _NodeContext:
    """What a node function sees while it runs (see ``nodes.NodeContext``)."""

    def __init__(self, run: _Run, node_id: str, inputs: dict[str, Any]) -> None:
        self.dirs = run.executor.dirs
        self.prompt = run.prompt
        self.extra_data = run.extra_data
        self._run = run
        self._node_id = node_id
        self._inputs = inputs
        # Time spent in sampler steps: simulated, so not the node's own compute time.
        self.stepped_s = 0.0

    def sampler_step(self, value: int, total: int) -> None:
        run, executor = self._run, self._run.executor
        started = time.monotonic()
        executor.wait(run, executor.sampler_step_seconds(self._inputs), interruptible=True)
        self.stepped_s += time.monotonic() - started
        run.check_alive()
        executor.interrupt.check()
        run.progress.update(self._node_id, value, total)
        run.send(
            "progress",
            {"value": value, "max": total, "prompt_id": run.prompt_id, "node": self._node_id},
        )
        exit_code = executor.faults.take_exit(value)
        if exit_code is not None:
            log.warning("fault: exiting the process after sampler step %d", value)
            executor.hub.call_after_queued(lambda: executor.exit_process(exit_code))
            executor.wait(run, float("inf"), interruptible=False)


class InterruptFlag:
    """ComfyUI's process-wide interrupt flag: cleared when it fires."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            self._event.clear()
            raise Interrupted("Processing interrupted")


class ExecutionLog:
    """Every prompt the worker took, in order: what a test reads to prove that nothing ran
    twice, even after the client deleted the prompts from the history."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def started(self, run: _Run) -> dict[str, Any]:
        prefixes = [
            node["inputs"]["filename_prefix"]
            for node in run.prompt.values()
            if isinstance(node.get("inputs", {}).get("filename_prefix"), str)
        ]
        entry: dict[str, Any] = {
            "prompt_id": run.prompt_id,
            "client_id": run.client_id,
            "filename_prefixes": prefixes,
            "started_ms": _now_ms(),
            "finished_ms": None,
            "status": None,  # "success" or "error" once done; None while running or dropped
        }
        with self._lock:
            self._entries.append(entry)
        return entry

    def finished(self, entry: dict[str, Any], status: str) -> None:
        with self._lock:
            entry["finished_ms"] = _now_ms()
            entry["status"] = status

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries]


class Executor:
    """The worker thread and the caches it owns."""

    def __init__(
        self,
        *,
        queue: PromptQueue,
        hub: Hub,
        schemas: Schemas,
        dirs: DataDirs,
        faults: Faults,
        step_seconds: float,
        exit_process: Callable[[int], Any],
        profile: Profile | None = None,
    ) -> None:
        self.queue = queue
        self.hub = hub
        self.schemas = schemas
        self.dirs = dirs
        self.faults = faults
        self.step_seconds = step_seconds
        self.profile = profile
        self.exit_process = exit_process
        self.interrupt = InterruptFlag()
        self.cache = NodeCache()
        self.executions = ExecutionLog()
        # The running prompt's target and node, for the reconnect `executing` message.
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._run_epoch = -1
        self.stopping = False
        self._thread = threading.Thread(
            target=self._work, name="standin-prompt-worker", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self.stopping = True
        self.queue.close()
        self._thread.join(timeout=timeout_s)

    def current_node_for(self, sid: str) -> str | None:
        """The node running for ``sid``'s prompt, if any (not one a restart dropped)."""
        node_id = self.last_node_id
        if self.client_id != sid or self._run_epoch != self.queue.epoch:
            return None
        return node_id

    def sampler_step_seconds(self, inputs: dict[str, Any]) -> float:
        """One step of a sampler with these inputs: the profile's, else ``step_seconds``."""
        if self.profile is None:
            return self.step_seconds
        return self.profile.step_seconds(inputs)

    def wait(self, run: _Run, seconds: float, *, interruptible: bool) -> None:
        """Spend ``seconds`` of simulated work; ends early on interrupt (if allowed) or abort."""
        deadline = time.monotonic() + seconds
        while True:
            run.check_alive()
            if interruptible and self.interrupt.is_set():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(_WAIT_SLICE_S, remaining))

    # --- the worker loop -----------------------------------------------------------------

    def _work(self) -> None:
        while not self.stopping:
            flags = self.queue.take_flags()
            if flags.get("free_memory") or flags.get("restart"):
                self.cache.reset()
            task = self.queue.get(timeout_s=1000.0)
            if task is None:
                continue
            try:
                self._run_task(task)
            except RunAborted:
                log.info("prompt %s dropped (restart or shutdown)", task.prompt_id)
            except Exception:
                # ComfyUI's worker would die here and stall the queue; the stand-in records
                # the prompt as failed instead, so a test sees an error, not a hang.
                log.exception("stand-in bug while running prompt %s", task.prompt_id)
                status = {"status_str": "error", "completed": False, "messages": []}
                self.queue.task_done(task, {"outputs": {}, "meta": {}}, status)
            finally:
                self.last_node_id = None

    def _run_task(self, task: Task) -> None:
        run = _Run(self, task)
        entry = self.executions.started(run)
        self.interrupt.clear()
        self.client_id = run.client_id
        self._run_epoch = task.epoch
        success = self._execute(run)
        history_result = self._history_result(run)
        self.last_node_id = None
        self.executions.finished(entry, "success" if success else "error")
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": run.status_messages,
        }
        if self.queue.task_done(task, history_result, status) and run.client_id is not None:
            run.send("executing", {"node": None, "prompt_id": run.prompt_id})

    def _execute(self, run: _Run) -> bool:
        prompt = run.prompt
        run.add_message("execution_start", {"prompt_id": run.prompt_id}, broadcast=False)
        self.cache.set_prompt(prompt, lambda ct, inputs: nodes.fingerprint(self.dirs, ct, inputs))
        cached = [node_id for node_id in prompt if self.cache.get(node_id) is not None]
        run.add_message(
            "execution_cached", {"nodes": cached, "prompt_id": run.prompt_id}, broadcast=False
        )
        order = ExecutionList(
            prompt,
            is_cached=lambda node_id: self.cache.get(node_id) is not None,
            is_output=lambda node_id: self.schemas.is_output(prompt[node_id]["class_type"]),
        )
        for output_id in run.outputs:
            order.add_node(output_id)
        while not order.is_empty():
            try:
                node_id = order.stage()
            except DependencyCycleError as exc:
                self._report_failure(
                    run,
                    order.cycle_nodes()[0],
                    exc,
                    {
                        "exception_message": f"{exc}\n",
                        "exception_type": "graph.DependencyCycleError",
                        "traceback": [],
                        "current_inputs": [],
                    },
                )
                return False
            failure = self._execute_node(run, node_id)
            if failure is not None:
                self._report_failure(run, node_id, *failure)
                return False
            order.complete(node_id)
        run.add_message("execution_success", {"prompt_id": run.prompt_id}, broadcast=False)
        return True

    def _execute_node(self, run: _Run, node_id: str) -> tuple[BaseException, dict] | None:
        """Run (or serve from cache) one node; the exception and error details on failure."""
        class_type = run.prompt[node_id]["class_type"]
        if self.cache.get(node_id) is not None:
            if run.client_id is not None:
                ui = self.cache.get_ui(node_id)
                run.send(
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": ui["output"] if ui else None,
                        "prompt_id": run.prompt_id,
                    },
                )
            run.progress.finish(node_id)
            return None
        input_data: dict[str, list[Any]] | None = None
        try:
            run.progress.start(node_id)
            input_data = self._gather_inputs(run, node_id)
            if run.client_id is not None:
                self.last_node_id = node_id
                run.send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id},
                )
            run.check_alive()
            self.interrupt.check()
            result = self._call_node(run, node_id, class_type, input_data)
            if result.ui is not None:
                self.cache.set_ui(
                    node_id,
                    {
                        "meta": {
                            "node_id": node_id,
                            "display_node": node_id,
                            "parent_node": None,
                            "real_node_id": node_id,
                        },
                        "output": result.ui,
                    },
                )
                if run.client_id is not None:
                    run.send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": result.ui,
                            "prompt_id": run.prompt_id,
                        },
                    )
            self.cache.set(node_id, [[value] for value in result.outputs])
        except Interrupted as exc:
            return exc, {}
        except Exception as exc:
            log.warning("node %s (%s) raised: %r", node_id, class_type, exc)
            tips = OOM_TIPS if is_out_of_memory(exc) else ""
            formatted = {}
            if input_data is not None:
                formatted = {
                    k: [format_value(v) for v in values] for k, values in input_data.items()
                }
            return exc, {
                "exception_message": f"{exc}\n{tips}",
                "exception_type": full_type_name(type(exc)),
                "traceback": traceback.format_tb(exc.__traceback__),
                "current_inputs": formatted,
            }
        run.progress.finish(node_id)
        run.executed.append(node_id)
        return None

    def _call_node(
        self, run: _Run, node_id: str, class_type: str, input_data: dict[str, list[Any]]
    ) -> nodes.NodeResult:
        for fault in self.faults.take(class_type):
            if fault.kind == "slow":
                self.wait(run, fault.seconds, interruptible=False)
            else:
                raise fault.make_exception()
        kwargs = {name: values[0] for name, values in input_data.items()}
        ctx = _NodeContext(run, node_id, kwargs)
        started = time.monotonic()
        result = nodes.NODES[class_type](ctx, **kwargs)
        if self.profile is not None:
            compute_s = time.monotonic() - started - ctx.stepped_s
            # A node runs only when it is not cached, so a loader that runs reads its files.
            profiled_s = self.profile.node_seconds(class_type, kwargs, cold=True)
            self.wait(run, profiled_s - compute_s, interruptible=False)
        return result

    def _gather_inputs(self, run: _Run, node_id: str) -> dict[str, list[Any]]:
        """Input values by name, each as a one-element list (ComfyUI's input_data_all)."""
        node = run.prompt[node_id]
        class_type = node["class_type"]
        info = self.schemas.info(class_type)
        data: dict[str, list[Any]] = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                outputs = self.cache.get(value[0])
                if outputs is None or value[1] >= len(outputs):
                    continue
                data[name] = outputs[value[1]]
            elif input_spec(info, name)[1] is not None:
                data[name] = [value]
        if not self.schemas.is_v3(class_type):
            for name, kind in self.schemas.hidden_inputs(class_type).items():
                if kind == "PROMPT":
                    data[name] = [run.prompt]
                elif kind == "EXTRA_PNGINFO":
                    data[name] = [run.extra_data.get("extra_pnginfo")]
        return data

    def _report_failure(
        self, run: _Run, node_id: str, exc: BaseException, details: dict[str, Any]
    ) -> None:
        base = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": run.prompt[node_id]["class_type"],
            "executed": list(run.executed),
        }
        if isinstance(exc, Interrupted):
            run.add_message("execution_interrupted", base, broadcast=True)
        else:
            run.add_message(
                "execution_error",
                {
                    **base,
                    **details,
                    "current_outputs": list(run.prompt),
                },
                broadcast=False,
            )

    def _history_result(self, run: _Run) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in run.prompt:
            ui = self.cache.get_ui(node_id)
            if ui is not None:
                outputs[node_id] = ui["output"]
                meta[node_id] = ui["meta"]
        return {"outputs": outputs, "meta": meta}
