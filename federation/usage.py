"""What a process used: CPU seconds, peak memory, bytes on the wire (for experiment reports).

Why here: every node reports the same figures the same way, and the experiment runner (acting as
the bank's operator) reports its own. CPU and peak RSS come from ``getrusage``: the process
itself plus its finished children (the Paillier worker pools, which are shut down at the end
of each job), so nothing the node spent is missed. Bytes are the protobuf payloads this process
sent and received on any carrier (``federation.transport.base.TRAFFIC``).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

from federation.files import write_atomic
from federation.transport.calls import TRAFFIC

USAGE_FILE = "usage.json"


def _maxrss_mb(who: int) -> float:
    kib = resource.getrusage(who).ru_maxrss
    return kib / (1 << 20) if sys.platform == "darwin" else kib / 1024  # bytes on macOS


def process_usage() -> dict[str, Any]:
    """This process's usage so far (children: only those already finished and reaped)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_seconds": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
        "peak_rss_mb": round(
            max(_maxrss_mb(resource.RUSAGE_SELF), _maxrss_mb(resource.RUSAGE_CHILDREN)), 1
        ),
        **TRAFFIC.snapshot(),
    }


def write_usage(node_dir: Path) -> None:
    write_atomic(node_dir / USAGE_FILE, json.dumps(process_usage()).encode())


def read_usage(node_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((node_dir / USAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


__all__ = ["USAGE_FILE", "process_usage", "read_usage", "write_usage"]
