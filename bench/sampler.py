"""A poor man's py-spy: run a module with a thread that samples its main thread's stack every
few milliseconds, and write what was running when the process ends (normally or by SIGINT).

    python -m bench.sampler OUT.txt -m proxy serve

Only what runs after the process gets SIGUSR1 is kept (start-up and imports are not the
point), or everything if it never does. The GIL switch interval is lowered to 0.5 ms, so the
sampling thread gets its turn about when it asks.

Samples whose innermost frame is the event loop's selector wait are counted as idle and left
out. For the rest, OUT.txt lists the innermost function (own time) and every function of the
`proxy` package on the stack (inclusive time), as shares of the busy samples. Good enough to
rank where a busy process spends its time, not to time single calls.
"""

from __future__ import annotations

import atexit
import collections
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL_S = 0.002
OWN_PACKAGE = "/proxy/"


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno} {code.co_name}"


class Sampler:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.main = threading.main_thread().ident
        self.own: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.busy = 0
        self.idle = 0
        self.recording = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        sys.setswitchinterval(0.0005)
        signal.signal(signal.SIGUSR1, self._restart)
        self._thread.start()
        atexit.register(self.write)

    def _restart(self, signum: int, frame: FrameType | None) -> None:
        """SIGUSR1: forget what was sampled so far (start-up), keep sampling."""
        self.own.clear()
        self.inclusive.clear()
        self.busy = self.idle = 0

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            frame = sys._current_frames().get(self.main)  # noqa: SLF001 - the sampler's point
            if frame is None:
                continue
            leaf = frame.f_code
            if leaf.co_name in ("select", "poll") and "selectors" in leaf.co_filename:
                self.idle += 1
                continue
            self.busy += 1
            self.own[_where(frame)] += 1
            seen = set()
            while frame is not None:
                if OWN_PACKAGE in frame.f_code.co_filename:
                    seen.add(_where(frame))
                frame = frame.f_back
            self.inclusive.update(seen)

    def write(self, top: int = 40) -> None:
        self._stop.set()
        total = self.busy or 1
        lines = [
            f"{self.busy} busy samples, {self.idle} idle (every {INTERVAL_S * 1000:.0f} ms, "
            f"written {time.strftime('%Y-%m-%d %H:%M:%S')})",
            "",
            "own (innermost frame):",
        ]
        lines += [f"  {n / total:6.1%}  {where}" for where, n in self.own.most_common(top)]
        lines += ["", "inclusive (proxy functions on the stack):"]
        lines += [f"  {n / total:6.1%}  {where}" for where, n in self.inclusive.most_common(top)]
        self.out.write_text("\n".join(lines) + "\n")


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: python -m bench.sampler OUT -m MODULE [ARGS...]")
    Sampler(Path(out)).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
