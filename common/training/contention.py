"""Noticing a CPU shared with other programs. A torch training ran 50x slower beside a test suite
on the same cores and said nothing; `Contention` says so, once. Standard library only: bench.machine,
imported before numpy to fix thread counts, measures other processes' load with the same functions.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

WINDOW_S = 10.0  # a sustained stretch, not one slow step
SHARE = 0.5  # of a core: this process's CPU time / wall time below which it is waiting for a core
OTHERS = 0.5  # cores other processes keep busy meanwhile: the reason (not I/O, not a pause of ours)


def cpu_snapshot():
    """(wall s, machine busy CPU s, this process's CPU s) for `others_busy`; None without /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = os.times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_busy(start, end):
    """Mean number of cores that OTHER processes kept busy between two snapshots (None if unknown):
    the honest sign of a shared machine, unlike the load average, which counts our own threads."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


class Contention:
    """Call tick() often (every step: a snapshot costs tens of microseconds). The first window of at least
    `window_s` seconds in which this process got under `share` of a core while other processes kept
    `others` cores busy gives one warning (warnings.warn), naming both; later windows say nothing."""

    def __init__(self, what: str, window_s: float | None = None, share: float | None = None,
                 others: float | None = None, snapshot=cpu_snapshot):
        self.what, self.snapshot = what, snapshot
        self.window_s = WINDOW_S if window_s is None else window_s
        self.share = SHARE if share is None else share
        self.others = OTHERS if others is None else others
        self.start, self.warned = snapshot(), False

    def tick(self) -> None:
        if self.warned or self.start is None:
            return
        end = self.snapshot()
        wall = end[0] - self.start[0]
        if wall < self.window_s:
            return
        share, busy = (end[2] - self.start[2]) / wall, others_busy(self.start, end)
        self.start = end
        if share < self.share and busy is not None and busy >= self.others:
            self.warned = True
            warnings.warn(f"the CPU is shared: {self.what} got {share:.0%} of a core over the last {wall:.0f} s while "
                          f"other processes kept {busy:.1f} cores busy; it runs slower than alone", stacklevel=2)
