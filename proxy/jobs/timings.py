"""What the proxy has learned about how long each node of a workflow takes.

Every job the proxy follows from its start is timed node by node (from the websocket's
`executing` messages: a node runs from its own message to the next one), and so is the
proxy's own storing of the outputs (`STORE_NODE`). The durations are kept per backend,
workflow and size class (pixels x frames, and sampler steps), as a moving average, in the
database: a restart keeps what was learned. The progress model (`proxy.jobs.progress`) weighs
each node by its expected duration, so the bar moves with time.

Which figures a job uses, most specific first: this backend's for this size; any backend's
for this size; this backend's for the nearest size it has run (by pixels x frames); none (the
workflow's fixed weights, until the first run ends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Float, Integer, String, Table, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from proxy.db import Database, metadata
from proxy.jobs.store import utcnow

log = logging.getLogger("proxy.timings")

# The proxy's own last step (fetch and store the outputs), timed like a node.
STORE_NODE = "@store"
# `<node id>` + TAIL: a stepped node's time after its last step report.
TAIL = "~tail"
# Weight of a new measurement in the moving average (the first one is taken as it is).
ALPHA = 0.5

timings_table = Table(
    "node_timings",
    metadata,
    Column("backend", String(256), primary_key=True),
    Column("workflow", String(128), primary_key=True),
    Column("size_class", String(64), primary_key=True),
    Column("node_id", String(64), primary_key=True),
    Column("class_type", String(128), nullable=False),
    Column("work", Float, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class SizeClass:
    """Jobs of one size: the same pixels x frames and sampler steps take the same time."""

    width: int | None
    height: int | None
    length: int | None
    steps: int | None

    @classmethod
    def of(cls, params: dict[str, Any]) -> SizeClass:
        def number(*names: str) -> int | None:
            for name in names:
                value = params.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return int(value)
            return None

        return cls(
            number("width"), number("height"), number("length", "num_frames"), number("steps")
        )

    @classmethod
    def from_key(cls, key: str) -> SizeClass:
        size, _, steps = key.partition("/")
        parts = [None if p == "-" else int(p) for p in size.split("x")]
        width, height, length = (parts + [None, None, None])[:3]
        return cls(width, height, length, None if steps in ("", "-") else int(steps))

    @property
    def key(self) -> str:
        def part(value: int | None) -> str:
            return "-" if value is None else str(value)

        size = "x".join(part(v) for v in (self.width, self.height, self.length))
        return f"{size}/{part(self.steps)}"

    @property
    def work(self) -> float:
        """Pixels x frames (x steps): what the nearest size is measured by."""
        total = 1.0
        for value in (self.width, self.height, self.length, self.steps):
            total *= value or 1
        return total

    def describe(self) -> dict[str, int | None]:
        return {
            "width": self.width,
            "height": self.height,
            "length": self.length,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class NodeTiming:
    node_id: str
    class_type: str
    seconds: float
    samples: int


@dataclass(frozen=True)
class Expected:
    """The expected duration of each node (and of `STORE_NODE`), and where it came from."""

    seconds: dict[str, float]
    source: str  # "this size", "this size, another backend", "nearest size"


class TimingStore:
    """Learned node durations, in the database, with a read cache per process (one entry
    per backend, workflow and size: small)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[tuple[str, str, str], dict[str, NodeTiming]] = {}

    async def _rows(self, *conditions: Any) -> list[Any]:
        query = select(timings_table).where(and_(*conditions))
        async with self.db.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def _exact(self, backend: str, workflow: str, size: SizeClass) -> dict[str, NodeTiming]:
        key = (backend, workflow, size.key)
        if key not in self._cache:
            t = timings_table.c
            rows = await self._rows(
                t.backend == backend, t.workflow == workflow, t.size_class == size.key
            )
            self._cache[key] = {
                r.node_id: NodeTiming(r.node_id, r.class_type, r.seconds, r.samples) for r in rows
            }
        return self._cache[key]

    async def expected(self, backend: str, workflow: str, size: SizeClass) -> Expected | None:
        mine = await self._exact(backend, workflow, size)
        if mine:
            return Expected({n: t.seconds for n, t in mine.items()}, "this size")
        t = timings_table.c
        rows = await self._rows(t.workflow == workflow)
        same_size = [r for r in rows if r.size_class == size.key]
        if same_size:
            return Expected(_mean_by_node(same_size), "this size, another backend")
        here = [r for r in rows if r.backend == backend] or rows
        if not here:
            return None
        nearest = min({r.work for r in here}, key=lambda w: abs(w - size.work))
        return Expected(_mean_by_node([r for r in here if r.work == nearest]), "nearest size")

    async def record(
        self,
        backend: str,
        workflow: str,
        size: SizeClass,
        measured: dict[str, tuple[str, float]],
    ) -> None:
        """Fold one run's durations (node id -> (class_type, seconds)) into the averages."""
        if not measured:
            return
        known = await self._exact(backend, workflow, size)
        now = utcnow()
        updated: dict[str, NodeTiming] = dict(known)
        for node_id, (class_type, seconds) in measured.items():
            old = known.get(node_id)
            if old is None or old.class_type != class_type:
                updated[node_id] = NodeTiming(node_id, class_type, seconds, 1)
            else:
                value = old.seconds * (1 - ALPHA) + seconds * ALPHA
                updated[node_id] = NodeTiming(node_id, class_type, value, old.samples + 1)
        rows = [
            {
                "backend": backend,
                "workflow": workflow,
                "size_class": size.key,
                "node_id": timing.node_id,
                "class_type": timing.class_type,
                "work": size.work,
                "seconds": timing.seconds,
                "samples": timing.samples,
                "updated_at": now,
            }
            for node_id, timing in updated.items()
            if node_id in measured
        ]
        async with self.db.transaction() as conn:
            # An upsert: two runs recorded at once (two jobs ending together, or two
            # replicas) must not collide on the key; the later one's averages win.
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(timings_table)
            keys = {"backend", "workflow", "size_class", "node_id"}
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[timings_table.c[k] for k in sorted(keys)],
                    set_={
                        name: statement.excluded[name]
                        for name in ("class_type", "work", "seconds", "samples", "updated_at")
                    },
                ),
                rows,
            )
        self._cache[(backend, workflow, size.key)] = updated

    async def learned(self, workflow: str) -> list[dict[str, Any]]:
        """What was learned for `workflow`: one entry per backend and size, largest first."""
        t = timings_table.c
        rows = await self._rows(t.workflow == workflow)
        groups: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            groups.setdefault((row.backend, row.size_class), []).append(row)
        entries = []
        for (backend, size_class), members in groups.items():
            members.sort(key=lambda r: r.node_id)
            nodes = [
                {
                    "node_id": r.node_id,
                    "class_type": r.class_type,
                    "seconds": round(r.seconds, 3),
                    "samples": r.samples,
                }
                for r in members
            ]
            entries.append(
                {
                    "backend": backend,
                    "size": SizeClass.from_key(size_class).describe(),
                    "total_s": round(sum(r.seconds for r in members), 3),
                    "runs": max(r.samples for r in members),
                    "updated_at": max(r.updated_at for r in members).isoformat(),
                    "nodes": nodes,
                    "_work": members[0].work,
                }
            )
        entries.sort(key=lambda e: (-e.pop("_work"), e["backend"]))
        return entries


def _mean_by_node(rows: list[Any]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row in rows:
        sums.setdefault(row.node_id, []).append(row.seconds)
    return {node: sum(values) / len(values) for node, values in sums.items()}
