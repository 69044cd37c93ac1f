"""What a process used: CPU seconds, peak memory, bytes on the wire (for experiment reports).

Why here: every node reports the same figures the same way, and the experiment runner (acting as
the bank's operator) reports its own. CPU and peak RSS are the process's own tree: the process
(``getrusage``), its live descendants (the warm crypto and PSI worker pools and their
forkserver, read from ``/proc`` on Linux: pool workers live as long as the node, so they are
never among the reaped children) and, optionally, its reaped children. Peak RSS adds each
process's own peak, an upper bound of the tree's simultaneous peak. The experiment runner leaves
reaped children out: those are the node processes, which report for themselves. Bytes are the
protobuf payloads this process sent and received on any carrier
(``federation.transport.base.TRAFFIC``).
"""

from __future__ import annotations

import json
import os
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


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        text = fh.read()
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...


def descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (Linux ``/proc``; empty elsewhere or if unreadable)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _live_usage(pid: int) -> tuple[float, float] | None:
    """CPU seconds and peak RSS (MiB) of one live process, or None if it is gone.

    CPU includes the children it has reaped (cutime, cstime): a forkserver reaps the pool
    workers that ended (a pool replaced, a worker that died), whose work would else be lost."""
    try:
        fields = _stat_fields(pid)
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, cutime, cstime
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            hwm = next((ln for ln in fh if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
        return cpu, int(hwm.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None


def process_usage(*, reaped_children: bool = True) -> dict[str, Any]:
    """This process's tree's usage so far: itself, its live descendants (pool workers) and,
    unless ``reaped_children`` is false, its children already finished and reaped."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    cpu = me.ru_utime + me.ru_stime
    peak = _maxrss_mb(resource.RUSAGE_SELF)
    if reaped_children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += kids.ru_utime + kids.ru_stime
        peak += _maxrss_mb(resource.RUSAGE_CHILDREN)  # the largest reaped child
    live = [u for u in map(_live_usage, descendants(os.getpid())) if u is not None]
    cpu += sum(c for c, _ in live)
    peak += sum(m for _, m in live)
    return {
        "cpu_seconds": round(cpu, 3),
        "peak_rss_mb": round(peak, 1),
        "worker_processes": len(live),
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
