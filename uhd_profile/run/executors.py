"""Where a sweep's points run: in this process (``local``) or as Ray tasks (``ray``).

Both take the points, a ``run_point(point) -> record`` function and an ``on_record(record)``
callback that the driver calls (in this process) as each record arrives, so the results store is
written by one writer only, in completion order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from uhd_profile.errors import UhdProfileError, first_line

EXECUTORS = ("local", "ray")


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise UhdProfileError(f"--executor {name!r} is not valid; valid: {', '.join(EXECUTORS)}")


def error_record(point: dict, message: str) -> dict:
    """A bare record for a point whose runner itself failed (the sweep completes it with the
    recipe hash and an empty environment)."""
    return {"point": point, "point_id": point["point_id"], "status": "error", "error": message, "metrics": None}


def run_local(points: Iterable[dict], run_point: Callable[[dict], dict], on_record: Callable[[dict], None]) -> None:
    """One point after another in this process."""
    for p in points:
        on_record(run_point(p))


def _ray():
    try:
        import ray
    except ImportError:
        raise UhdProfileError("--executor ray needs Ray: pip install 'uhd-profile[ray]'") from None
    return ray


def run_ray(
    points: list[dict],
    run_point: Callable[[dict], dict],
    on_record: Callable[[dict], None],
    address: str | None = None,
    gpus_per_task: float | None = None,
    max_in_flight: int | None = None,
) -> None:
    """Run each point as a Ray task on the cluster at ``address`` (None: start a local one).

    A point measured on a GPU asks for ``gpus_per_task`` (default 1) GPUs, so Ray gives each task a
    GPU of its own; a point measured on the CPU asks for every CPU of a node's share so measurements
    do not share cores; count-only points ask for one CPU. A task that dies (worker crash, node
    lost) becomes an ``error`` record; the other points go on.
    """
    ray = _ray()
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=True)
        if address is None:
            kwargs.update(num_cpus=os.cpu_count() or 1)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or "a local instance"
            raise UhdProfileError(f"--executor ray could not connect to {where}: {str(exc).splitlines()[0]}") from None
        started_here = True
    try:
        cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        alive = [n.get("Resources", {}).get("CPU", 1) for n in ray.nodes() if n.get("Alive")]
        node_cpus = max(1, int(max(alive, default=1)))  # a measured CPU point holds a whole node
        task = ray.remote(max_retries=0)(_call)
        fn_ref = ray.put(run_point)

        def submit(p: dict):
            measured = p["device"] != "meta"
            if measured and p["device"].startswith("cuda"):
                opts = dict(num_gpus=gpus_per_task or 1, num_cpus=1)
            elif measured:
                opts = dict(num_cpus=node_cpus)
            else:
                opts = dict(num_cpus=1)
            return task.options(**opts).remote(fn_ref, p)

        limit = max_in_flight or max(2, cluster_cpus * 2)
        queue = list(points)
        in_flight: dict = {}
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                p = queue.pop(0)
                in_flight[submit(p)] = p
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                p = in_flight.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost task is that point's error, not the sweep's
                    rec = error_record(p, f"ray task failed: {first_line(exc)}")
                on_record(rec)
    finally:
        if started_here and address is None:
            ray.shutdown()


def _call(fn, point: dict) -> dict:
    return fn(point)
