"""What the CPU can do, read from the machine (never assumed): the matrix and vector units that
decide which precision the engine runs at."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Units that run bf16 matrix work natively (Intel AMX tiles; AVX-512 BF16 on Intel and AMD).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Units that run int8 dot products natively.
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
# Everything worth reporting about this CPU for inference speed.
REPORTED_FLAGS = ("avx2", "avx512f", *BF16_FLAGS, *INT8_FLAGS, "amx_tile", "avx512_fp16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def bf16(self) -> bool:
        """Native bf16 matrix units (AMX or AVX512-BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def features(self) -> list[str]:
        """The inference-relevant flags this CPU has, in a fixed order."""
        return [f for f in REPORTED_FLAGS if f in self.flags]

    def describe(self) -> dict:
        return {"model": self.model, "cores": self.cores, "features": self.features, "bf16": self.bf16}

    def with_flags(self, flags: frozenset[str] | set[str]) -> "CpuInfo":
        """The same CPU as if it had exactly `flags` (what-if planning: never changes how code runs)."""
        return CpuInfo(self.model, frozenset(flags), self.cores)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) from the text of /proc/cpuinfo (the first processor's)."""
    model, flags = platform.processor() or "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


@functools.lru_cache(maxsize=1)
def detect() -> CpuInfo:
    """This machine's CPU. Linux reads /proc/cpuinfo; elsewhere no flags are claimed, so the
    engine picks exact fp32 rather than guessing."""
    path = Path("/proc/cpuinfo")
    text = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = parse_cpuinfo(text)
    return CpuInfo(model, flags, os.cpu_count() or 1)
