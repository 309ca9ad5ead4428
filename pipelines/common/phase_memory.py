"""The launcher's peak memory per phase, apart from the runner it hosts: off unless `POSTERS_PHASE_MEMORY` names
a file (`posters bench scale` sets it), so a stage's run does nothing extra.

On DirectRunner the launcher process also hosts the runner, which holds the data between stages (Dataflow's
service holds it there). `make_pipeline` hands each pipeline to `watch_runs`, which wraps its runner's
`run_pipeline`: the phases are the launcher's work before a run (config, manifests, the graph), the run (the
runner's share) and the launcher's work after it (gates, publishing, reports), up to the process's exit. Each
phase's peak is the kernel's VmHWM, reset at the phase's start (`/proc/self/clear_refs` ← 5, Linux ≥ 4.0), so a
phase's peak is at least the resident set it started with. After a run the memory the runner freed is handed
back (gc, pyarrow's pool, glibc `malloc_trim`) before the next phase starts: what it could not hand back
(fragmented heap, caches of imported modules) stays counted in the launcher's later phases.

One JSON line per phase: `phase` (launcher | runner), `peak_mb`, `start_mb` (resident at its start; 0 for the
first) and, after a run, `released_mb` (resident once the freed memory is handed back).

`process_memory_mb` and `reset_peak_memory` are the /proc readings every memory measure here uses (this module,
`posters bench index`, `posters bench scale`).
"""
from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import sys

ENV = "POSTERS_PHASE_MEMORY"
_state = {"start_mb": 0.0, "exit_hooked": False}


def process_memory_mb(fields: tuple[str, ...], pid: int | str = "self", source: str = "status") -> dict[str, float]:
    """The kB `fields` of `/proc/PID/<source>` (`status`: VmHWM, VmRSS, RssAnon; `smaps_rollup`: Pss) in MB; 0.0
    for a field the kernel does not give or a process that is gone."""
    found = dict.fromkeys(fields, 0.0)
    try:
        with open(f"/proc/{pid}/{source}") as handle:
            for line in handle:
                name = line.partition(":")[0]
                if name in found:
                    found[name] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found


def reset_peak_memory() -> None:
    """Resets this process's peak resident set (VmHWM: `/proc/self/clear_refs` ← 5, Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _status_mb() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MB."""
    found = process_memory_mb(("VmHWM", "VmRSS"))
    return found["VmHWM"], found["VmRSS"]


def _release_freed() -> None:
    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def end_phase(phase: str, path: str, release: bool = False) -> None:
    """Records `phase`'s peak (since the last reset or the process's start) in `path`, then resets the peak."""
    peak, resident = _status_mb()
    record = {"phase": phase, "peak_mb": round(peak, 1), "start_mb": round(_state["start_mb"], 1)}
    if release:
        _release_freed()
        resident = _status_mb()[1]
        record["released_mb"] = round(resident, 1)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    reset_peak_memory()
    _state["start_mb"] = resident


def watch_runs(pipeline):
    """Wraps `pipeline.runner.run_pipeline` to record the launcher's phases around each run when `ENV` is set;
    returns `pipeline`."""
    path = os.environ.get(ENV)
    if not path:
        return pipeline
    run_pipeline = pipeline.runner.run_pipeline

    def measured(*args, **kwargs):
        end_phase("launcher", path)
        if not _state["exit_hooked"]:
            atexit.register(end_phase, "launcher", path)
            _state["exit_hooked"] = True
        try:
            return run_pipeline(*args, **kwargs)
        finally:
            end_phase("runner", path, release=True)

    pipeline.runner.run_pipeline = measured
    return pipeline
