"""CPU threads: torch's intra-op thread count, chosen for the cores this process may use and what else keeps them
busy (``threads: auto``), or as given (``threads: N``, ``OMP_NUM_THREADS``).

On a shared CPU, more threads than free cores is far slower than fewer (benchmarks/threads.py: torch's threads wait
for each other at every operation, and a busy core holds them all back). The thread count also decides the float
summation order, so it is part of what fixes a run's images: a run folder records the count and a resumed run keeps it.
"""
from __future__ import annotations

import os
import time

import torch

from ..errors import ConfigError

ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch takes its thread count from these when set


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_times(cores: set[int] | None = None) -> tuple[float, float] | None:
    """(busy, total) jiffies over ``cores`` (all when None) from /proc/stat; None where there is none (not Linux)."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cores is not None and int(name[3:]) not in cores):
            continue
        values = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(values) - values[3] - values[4]
        total += sum(values)
    return busy, total


def busy_cores(interval: float = 0.3) -> float:
    """How many of this process's cores other processes kept busy over ``interval`` seconds (0 where unknown)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    before, own = cpu_times(cores), time.process_time()
    if before is None:
        return 0.0
    time.sleep(interval)
    after, own = cpu_times(cores), time.process_time() - own
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    wall_cores = total / len(cores or range(os.cpu_count() or 1))  # jiffies per core in the interval
    return max(0.0, busy / wall_cores - own * os.sysconf("SC_CLK_TCK") / wall_cores)


def auto() -> tuple[int, str]:
    """The thread count for this machine and its load now, and why: the usable cores that no other process keeps
    busy (at least 1); as ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` say when set."""
    for name in ENVIRONMENT:
        if os.environ.get(name, "").strip().isdigit() and int(os.environ[name]) > 0:
            return torch.get_num_threads(), f"{name}={os.environ[name]}"
    cores, busy = usable_cores(), busy_cores()
    return max(1, min(cores, round(cores - busy))), f"{cores} cores, {busy:.1f} busy with other processes"


def choose(threads: int | str | None = "auto", recorded: int | None = None) -> tuple[int, str]:
    """Set torch's intra-op threads: ``threads`` when a number, else the count a resumed run ``recorded``, else
    :func:`auto`. Returns the count and why."""
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, int) and not isinstance(threads, bool):
        if threads < 1:
            raise ConfigError("threads", f"{threads} is not a thread count (>= 1, or auto)")
        count, why = threads, "threads in the config"
    elif threads in (None, "auto"):
        count, why = (recorded, "kept from the run folder's config") if recorded else auto()
    else:
        raise ConfigError("threads", f"{threads!r} is not a thread count (>= 1) or auto")
    torch.set_num_threads(count)
    return count, why
