"""Device farms: several devices of one kind measuring for one command, on Ray (spec.py the farm file,
cluster.py Ray itself, worker.py a device's actor, farm.py what is spread and how faults are handled)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeprune.progress import Progress
from edgeprune.types import TargetProfile


@contextmanager
def farm_session(farm_file: str | Path, ray_address: str | None, progress: Progress,
                 target: TargetProfile | None = None) -> Iterator:  # fmt: skip
    """The farm in `farm_file` started on Ray (joined at `ray_address`, else a local cluster), its devices running
    `target` (default: the file's; the command's after --runtime/--precision); every device's agent is closed and
    a local cluster stopped on leaving, also on Ctrl-C."""
    from edgeprune.farm.cluster import ray_cluster
    from edgeprune.farm.farm import Farm
    from edgeprune.farm.spec import load_farm

    spec = load_farm(farm_file)
    if target is not None:
        spec = dataclasses.replace(spec, target=target)
    with ray_cluster(ray_address) as (ray, start_s), Farm(spec, ray, progress, start_s) as farm:
        yield farm
