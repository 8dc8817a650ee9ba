"""Stopping the service `embedserve serve` started: drain the applications, then stop Ray,
and stop at once where the signal took this machine's Ray down with it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait


def stop() -> None:
    """Drain and stop the applications, then Ray. Where the signal that stops us reached this
    machine's Ray too (sent to the whole process group, as `kill -TERM -<pgid>` or systemd's
    control-group stop do: Ray's processes block only SIGINT), its GCS or raylet is gone and
    nothing can be drained: stop at once instead of waiting a minute on the dead GCS."""
    import ray
    from ray import serve

    def drain() -> None:
        # serve.shutdown() alone tears the proxies down with requests in flight (their clients
        # get a closed connection). Deleting the applications first lets every replica finish
        # what it holds (graceful_shutdown_timeout_s) while the answers still go back (through
        # the proxies, or, with direct ingress, the replica's own server, which stops taking
        # new connections first).
        for name in serve.status().applications:
            serve.delete(name, _blocking=True)
        serve.shutdown()

    pool = ThreadPoolExecutor(1, thread_name_prefix="embedserve-drain")
    drained = pool.submit(drain)
    pool.shutdown(wait=False)
    while not wait([drained], timeout=0.2).done:
        if lost := local_ray_lost():
            print(f"Ray's {' and '.join(lost)} stopped with the same signal: nothing left to drain", flush=True)
            try:
                ray._private.worker._global_node.kill_all_processes(check_alive=False)
            finally:
                os._exit(0)  # ray.shutdown() would wait on the dead GCS too
    try:
        drained.result()  # the drain's error, if any, once Ray is stopped
    finally:
        ray.shutdown()


def local_ray_lost() -> list[str]:
    """The GCS / raylet of the Ray this process started, if they have died (none: joined elsewhere)."""
    from ray._private import ray_constants, worker

    node = worker._global_node
    if node is None or not node.head:
        return []
    vital = (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET)
    return sorted({kind for kind, _ in node.dead_processes() if kind in vital})
