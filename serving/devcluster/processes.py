"""The processes and ports of the development cluster: free ports drawn where nothing else on
the machine draws them, and the children this process started, stopped with all they started."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import psutil

from serving.ports import listened_on


class PortAllocator:
    """Free ports for a cluster, never the same one twice, drawn from below the kernel's
    ephemeral range (where other processes' port-0 binds, outgoing connections and other Ray
    instances' unpinned ports land) and above Ray's default worker ports (10002-19999)."""

    LOW, HIGH = 20000, 32767

    def __init__(self, seed: int | None = None) -> None:
        self.taken: set[int] = set()
        self.random = random.Random(seed)
        try:
            ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
            self.high = min(self.HIGH, ephemeral - 1)
        except (OSError, ValueError, IndexError):
            self.high = self.HIGH

    def __call__(self) -> int:
        for _ in range(1000):
            port = self.random.randint(self.LOW, self.high)
            if port not in self.taken and not listened_on(port):
                self.taken.add(port)
                return port
        raise RuntimeError(f"no free port found in {self.LOW}-{self.high}")


children: dict[int, subprocess.Popen] = {}


def reap() -> None:
    for pid, proc in list(children.items()):
        if proc.poll() is not None:
            del children[pid]


def process_name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def stop_process_tree(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM a process started here and wait for it and its descendants (SIGKILL past the timeout)."""
    try:
        proc = psutil.Process(pid)
        tree = proc.children(recursive=True)
        proc.terminate()
    except psutil.Error:
        return
    finish([proc, *tree], timeout_s)


def finish(procs: list[psutil.Process], timeout_s: float) -> None:
    """Wait for these processes to exit; SIGKILL whatever is left after `timeout_s`."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    reap()
