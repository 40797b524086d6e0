"""What machine a measurement ran on, for benchmark tables and the starter's ``metrics.json``.

Machines of one kind differ (an Intel CPU with AMX one session, an AMD EPYC the next), and a
training recipe rounds differently on each: ``platform.processor()`` says only ``x86_64`` on
Linux, so the CPU's model name comes from ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "describe"]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``Intel(R) Xeon(R) Processor``), else what ``platform`` knows
    (``x86_64``), else ``unknown``."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe() -> str:
    """``x86_64 (Intel(R) Xeon(R) Processor), 2 cores``."""
    return f"{platform.machine()} ({cpu_model()}), {os.cpu_count()} cores"
