"""The machine and software a measurement ran on, read from the system (never typed in)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("onnxruntime", "openvino", "optimum-intel", "ray", "tokenizers", "numpy", "sentence-transformers", "torch", "transformers",
            "httpx", "grpcio", "fastapi", "uvicorn")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def nproc() -> int:
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def cpu_pressure() -> float | None:
    """Linux PSI: share of the last 60 s in which some runnable task waited for a CPU (%)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(dict(kv.split("=") for kv in line.split()[1:])["avg60"])
    except (OSError, KeyError, ValueError):
        pass
    return None


def machine() -> dict:
    from models import cpu

    here = cpu.detect()
    return {
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        # The inference-relevant CPU flags the figures came from (bf16 / int8 units).
        "cpu_flags": here.features,
        "cpu_bf16": here.bf16,
        "ram_gib": mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu_pressure_avg60": cpu_pressure(),
        "versions": versions(),
    }
