"""`embedserve serve` run as a user runs it: a process of its own (its own process group, as a
terminal's foreground job), its output in a log file, stopped with the signal a terminal's
Ctrl-C sends to the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.service import ROOT, artifact_dir

BANNER_END = "Ctrl-C stops it"


def cli_env(**extra: str) -> dict[str, str]:
    """The CLI's environment: a Ray of its own (not the session's), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "EMBEDSERVE_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               **extra)
    return env


class Serve:
    """One `embedserve serve` with one small model and no cache, on the given ports."""

    def __init__(self, log: Path, http_port: int, grpc_port: int, metrics_port: int, *flags: str,
                 env: dict | None = None):
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log = open(log, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port), "--models", "all-MiniLM-L6-v2", "--artifact-dir", str(artifact_dir()),
             "--encoder-num-cpus", "0.5", "--object-store-mb", "100", "--cache", "off", *flags],
            cwd=ROOT, env=env or cli_env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_banner(self, timeout_s: float = 300) -> str:
        deadline = time.monotonic() + timeout_s
        while BANNER_END not in self.output():
            assert self.proc.poll() is None, f"exit {self.proc.returncode}\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, self.output()[-4000:]
            time.sleep(0.5)
        return self.output()

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
