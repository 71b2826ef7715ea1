"""Ray, the engine a farm runs on: joined at `--ray ADDRESS`, or started on this machine for the length of a
command. Ray is an optional extra (`edgeprune[farm]`)."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Any

from edgeprune.errors import DeviceError, MissingDependency

# A local cluster's object store holds end-to-end models in flight to the devices (a few MB each); Ray's default
# (30 % of memory) would reserve ~7 GB of a 24 GB machine for it.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", extra="farm", purpose="--farm: a device farm runs on Ray") from None
    return ray


@contextmanager
def ray_cluster(address: str | None):
    """Ray connected for the block: the cluster at `address` ("auto": the one `ray start` runs on this machine),
    else a local one started now and stopped after. Yields (the ray module, seconds it took to start or join)."""
    ray = import_ray()
    started = time.perf_counter()
    # ERROR: Ray's start-up notes (and its note that token authentication is on) are not the user's concern
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        else:
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceError(f"cannot start or join {where}: {first}",
                          fix="start the head with `ray start --head` and pass its address to --ray "
                              "(or leave --ray out for a local cluster)") from None  # fmt: skip
    try:
        yield ray, time.perf_counter() - started
    finally:
        ray.shutdown()


def node_resource(node: str) -> dict[str, float]:
    """The custom resource that places an actor on the Ray node with this address (Ray gives every node
    `node:<address>`); a sliver of it, so any number of devices share one node."""
    return {f"node:{node}": 0.001}
