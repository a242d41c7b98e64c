"""Several proxy processes on one PostgreSQL: who drives which backend (`leases`), job events
between them (`relay`), and the secrets they share (`secrets`)."""

from proxy.replicas.leases import (
    LeaseKeeper,
    Replica,
    ReplicaConflict,
    announce,
    default_replica_id,
    live_replica_ids,
    live_replicas,
)
from proxy.replicas.relay import EventRelay
from proxy.replicas.secrets import shared_secret

__all__ = [
    "EventRelay",
    "LeaseKeeper",
    "Replica",
    "ReplicaConflict",
    "announce",
    "default_replica_id",
    "live_replica_ids",
    "live_replicas",
    "shared_secret",
]
