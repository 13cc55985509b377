"""What a bench ran on: the CPU's name (benches import this from their own folder)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The ``model name`` of /proc/cpuinfo, else what ``platform`` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return text.split("model name")[1].split(":", 1)[1].split("\n")[0].strip()
    except (OSError, IndexError):
        return platform.processor() or platform.machine()
