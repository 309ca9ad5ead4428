"""`posters bench scale`: how each stage's time and memory grow with the catalog, on Beam's DirectRunner with
worker processes, so a stage that gathers a whole collection in one process shows up as a growing worker.

    posters bench scale                                   # 100k, 200k, 400k titles
    posters bench scale --sizes 50000,100000 --json bench_out/scale.json
    posters bench scale --table-from bench_out/scale.json  # the table of a saved run again

For every N: generated clustered unit vectors (128-d) written as embeddings, a generated watch history (one
user per 10 titles, 1–20 watches each, plus one user who watched 2,000), then, each stage in its own
subprocess (the "launcher"), with `--direct_running_mode=multi_processing --direct_num_workers=2`:
`posters index`, `posters candidates`, and the nightly overlap report (`pipelines.nightly.overlap`, run in
the launcher as the nightly does; the same night serves as both nights). While a stage runs its process tree
is polled through /proc: the launcher's and each worker's peak resident set (VmHWM, which the kernel keeps
between polls; it includes touched pages of memory-mapped files, which the page cache shares between
processes) and the largest private anonymous memory seen (RssAnon), and the tree's CPU time (RUSAGE_CHILDREN
once it has exited). The last column of the table
is the growth from the smallest to the largest N.

On DirectRunner the launcher also hosts the runner, which holds the data between stages (Dataflow's service
does there), so the launcher's whole peak says little about its own work. The bench sets
`POSTERS_PHASE_MEMORY` for each stage, and `make_pipeline` (pipelines/common/phase_memory.py) records the
launcher's peak per phase: before the run (config, manifests, the graph), the run, and after it (gates,
publishing), each from a reset VmHWM. Rows: "launcher own work peak" (the largest phase outside runs, less what
the runs left resident), "runner (in launcher) peak" (the largest run's), "runner's memory left in launcher"
(freed by the runner but kept by glibc's per-thread arenas after gc and `malloc_trim`). A stage without a
pipeline (the overlap report, evaluate) is all launcher work. `--table-from run.json` prints a saved run's table.

`posters evaluate` (stage `evaluate`, not a Beam pipeline) runs in its launcher alone, on the embeddings, the
watch history and a generated CSV catalog whose rows share one small poster, with the config given (the nightly's
evaluation, less the near-duplicates, which need the exported model): its launcher peak is what the nightly's
evaluation holds at that N.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.bench.index import clustered_unit_vectors
from pipelines.common import phase_memory, storage
from pipelines.common.phase_memory import process_memory_mb
from pipelines.contracts import (
    EMBEDDINGS_MANIFEST_FILE,
    ITEM2ITEM_DIR,
    ITEM2ITEM_SCHEMA,
    SUCCESS_FILE,
    embeddings_schema,
)

DEFAULT_SIZES = (100_000, 200_000, 400_000)
DIRECT_FLAGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ROWS_PER_FILE = 50_000
MODEL_VERSION = "bench-scale"
STAGES = ("index", "candidates", "overlap", "evaluate")


# --- inputs -----------------------------------------------------------------------------------------------------
def write_embeddings(directory: str, n: int, dim: int, seed: int = 0) -> list[str]:
    """n generated unit vectors as embeddings Parquet files + manifest + `_SUCCESS`; returns the title ids."""
    vectors = clustered_unit_vectors(n, dim, seed=seed)
    titles = [f"tt{i:09d}" for i in range(n)]
    schema = embeddings_schema(dim, MODEL_VERSION)
    names = []
    for part, start in enumerate(range(0, n, ROWS_PER_FILE)):
        rows = slice(start, min(n, start + ROWS_PER_FILE))
        table = pa.table({
            "title_id": titles[rows],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].ravel()), dim),
            "image_sha256": [f"sha-{t}" for t in titles[rows]],
            "model_version": [MODEL_VERSION] * (rows.stop - rows.start),
            "genres": [["Drama"]] * (rows.stop - rows.start),
        }, schema=schema)
        names.append(f"part-{part:05d}.parquet")
        pq.write_table(table, os.path.join(directory, names[-1]))
    storage.write_json(os.path.join(directory, EMBEDDINGS_MANIFEST_FILE),
                       {"files": names, "rows": n, "dim": dim, "model_version": MODEL_VERSION, "metric": "angular"})
    storage.write_bytes(os.path.join(directory, SUCCESS_FILE), b"")
    return titles


def write_history(path: str, titles: list[str], seed: int = 0, heavy_watches: int = 2000) -> int:
    """One user per 10 titles with 1–20 watches, plus one heavy user; returns the number of watches."""
    rng = np.random.default_rng(seed)
    users = max(1, len(titles) // 10)
    counts = rng.integers(1, 21, users)
    user_ids = np.repeat([f"u{i:08d}" for i in range(users)], counts).tolist() + ["heavy"] * heavy_watches
    watched = rng.integers(0, len(titles), len(user_ids))
    pq.write_table(pa.table({"user_id": user_ids, "title_id": [titles[i] for i in watched],
                             "timestamp": np.full(len(user_ids), 1_700_000_000.0),
                             "weight": np.ones(len(user_ids))}), path)
    return len(user_ids)


def write_item2item(directory: str, titles: list[str], k: int = 10, seed: int = 0) -> None:
    """Generated item→item lists (k random neighbours a title) in the candidates output layout, for the overlap
    report without an index and a candidates run (`--generated-lists`)."""
    rng, n = np.random.default_rng(seed), len(titles)
    os.makedirs(os.path.join(directory, ITEM2ITEM_DIR), exist_ok=True)
    for part, start in enumerate(range(0, n, ROWS_PER_FILE)):
        rows = min(ROWS_PER_FILE, n - start)
        neighbours = pa.array([titles[i] for i in rng.integers(0, n, rows * k)])
        scores = pa.array(rng.random(rows * k, dtype=np.float32))
        lists = pa.ListArray.from_arrays(pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32)),
                                         pa.StructArray.from_arrays([neighbours, scores], ["title_id", "score"]))
        table = pa.table([titles[start:start + rows], lists, ["generated"] * rows, [MODEL_VERSION] * rows],
                         schema=ITEM2ITEM_SCHEMA)
        pq.write_table(table, os.path.join(directory, ITEM2ITEM_DIR, f"part-{part:05d}.parquet"))
    storage.write_bytes(os.path.join(directory, SUCCESS_FILE), b"")


def write_catalog(directory: str, titles: list[str]) -> str:
    """A CSV catalog manifest of `titles` whose rows all name one small poster (what `posters evaluate` reads
    for the sampled titles); returns the manifest's path."""
    from PIL import Image

    Image.new("RGB", (32, 48), (200, 60, 40)).save(os.path.join(directory, "poster.jpg"), format="JPEG")
    path = os.path.join(directory, "catalog.csv")
    with open(path, "w") as handle:
        handle.write("title_id,title,genres,poster_uri\n")
        handle.writelines(f"{t},Title {t},Drama,poster.jpg\n" for t in titles)
    return path


# --- measuring a process tree ------------------------------------------------------------------------------------
def _stat_fields(pid) -> list[str]:
    """The fields of `/proc/PID/stat` after the command name (state, ppid, …; empty once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return []


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(name)
            if len(fields) > 1:
                tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _memory_mb(pid: int) -> tuple[float, float]:
    """(peak resident set VmHWM, current private anonymous memory RssAnon) of a process, in MB. VmHWM also
    counts the pages of memory-mapped files a process touched, which the page cache shares between processes;
    RssAnon is what the process holds alone."""
    found = process_memory_mb(("VmHWM", "RssAnon"), pid)
    return found["VmHWM"], found["RssAnon"]


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if len(fields) > 12 else 0


def _pss_mb(pid: int) -> float:
    """A process's proportional set size in MB (`/proc/PID/smaps_rollup`): each shared page (a memory-mapped
    index, the page cache of a file, libraries) divided among the processes that map it; 0 once it is gone."""
    return process_memory_mb(("Pss",), pid, "smaps_rollup")["Pss"]


class TreeMonitor(threading.Thread):
    """Polls a process and its descendants: the launcher's peak RSS, the largest descendant's, the peak of the
    whole tree's proportional memory (PSS summed over the processes at each poll), and the tree's CPU time as
    last seen (a Beam worker its launcher never waits for is not in the launcher's rusage)."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.launcher_mb, self.launcher_anon_mb, self.workers_seen = 0.0, 0.0, set()
        self.workers_mb: dict[int, float] = {}
        self.workers_anon_mb: dict[int, float] = {}
        self.tree_pss_mb = 0.0
        self._ticks: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            peak, anon = _memory_mb(self.pid)
            self.launcher_mb, self.launcher_anon_mb = max(self.launcher_mb, peak), max(self.launcher_anon_mb, anon)
            children = _descendants(self.pid)
            self.tree_pss_mb = max(self.tree_pss_mb, sum(_pss_mb(pid) for pid in [self.pid, *children]))
            for pid in [self.pid, *children]:
                self._ticks[pid] = max(self._ticks.get(pid, 0), _cpu_ticks(pid))
            for child in children:
                self.workers_seen.add(child)
                peak, anon = _memory_mb(child)
                self.workers_mb[child] = max(self.workers_mb.get(child, 0.0), peak)
                self.workers_anon_mb[child] = max(self.workers_anon_mb.get(child, 0.0), anon)
            self._stop_event.wait(self.interval_s)

    def stop(self):
        self._stop_event.set()
        self.join()

    @property
    def cpu_s(self) -> float:
        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    @property
    def largest_worker_mb(self) -> float:
        return max(self.workers_mb.values(), default=0.0)

    @property
    def largest_worker_anon_mb(self) -> float:
        return max(self.workers_anon_mb.values(), default=0.0)


def read_phases(path: str) -> list[dict]:
    """`phase_memory`'s records in `path` (none when no pipeline ran: the launcher is all there is)."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def phase_peaks(phases: list[dict]) -> dict:
    """The launcher's own work and the runner it hosts, apart: `launcher_own_peak_mb`, the largest peak of the
    launcher's phases (before, between and after runs), each less what the runs before it left resident
    (`runner_left_mb`: freed by the runner but kept by glibc's per-thread arenas, which `malloc_trim` does not
    hand back; the launcher's main thread allocates from its own arena, so its work after a run does not reuse
    it); `runner_peak_mb`, the largest peak of a run; `runner_added_mb`, the most a run added to the resident
    set it started with. Empty when no pipeline ran."""
    runs = [p for p in phases if p["phase"] == "runner"]
    if not runs:
        return {}
    own, carried = [], 0.0
    for phase in phases:
        if phase["phase"] == "launcher":
            own.append(phase["peak_mb"] - carried)
        else:
            carried += phase["released_mb"] - phase["start_mb"]
    return {"launcher_own_peak_mb": round(max(own, default=0.0), 1),
            "launcher_raw_peaks_mb": [p["peak_mb"] for p in phases if p["phase"] == "launcher"],
            "runner_peak_mb": max(p["peak_mb"] for p in runs),
            "runner_added_mb": round(max(p["peak_mb"] - p["start_mb"] for p in runs), 1),
            "runner_left_mb": round(carried, 1), "phases": phases}


def measure(command: list[str], env: dict, log_path: str, cwd: str | None = None) -> dict:
    """Runs `command` (a stage's launcher) in `cwd` and measures its tree; raises when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase_path = log_path + ".phases.jsonl"
    if os.path.exists(phase_path):
        os.remove(phase_path)
    env = {**env, phase_memory.ENV: phase_path}
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        monitor = TreeMonitor(process.pid)
        monitor.start()
        code = process.wait()
        monitor.stop()
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:4])} … exited {code}; see {log_path}")
    phases = phase_peaks(read_phases(phase_path))  # the launcher resets its peak per phase: the polls may miss one
    launcher_peak = max([monitor.launcher_mb, phases.get("runner_peak_mb", 0.0),
                         phases.get("launcher_own_peak_mb", 0.0)])
    # the launcher's rusage counts the workers it reaped; the polls count every process seen, each up to its last
    # poll: the larger is a lower bound where some workers were reaped and others not
    reaped = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": round(wall, 1), "cpu_s": round(max(reaped, monitor.cpu_s), 1),
            "launcher_peak_mb": round(launcher_peak, 1), "launcher_anon_mb": round(monitor.launcher_anon_mb, 1),
            "launcher_own_peak_mb": phases.get("launcher_own_peak_mb", round(launcher_peak, 1)),
            "runner_peak_mb": phases.get("runner_peak_mb"), "runner_added_mb": phases.get("runner_added_mb"),
            "runner_left_mb": phases.get("runner_left_mb"), "phases": phases.get("phases", []),
            "launcher_raw_peaks_mb": phases.get("launcher_raw_peaks_mb"),
            "largest_worker_peak_mb": round(monitor.largest_worker_mb, 1),
            "largest_worker_anon_mb": round(monitor.largest_worker_anon_mb, 1),
            "tree_pss_peak_mb": round(monitor.tree_pss_mb, 1), "processes": len(monitor.workers_seen)}


# --- the stages ---------------------------------------------------------------------------------------------------
def stage_commands(work: str, config: str, overrides: list[str]) -> dict[str, list[str]]:
    python, sets = sys.executable, [arg for item in overrides for arg in ("--set", item)]
    cli = [python, "-m", "pipelines.cli"]
    paths = {name: os.path.join(work, name) for name in ("embeddings", "index", "history.parquet", "candidates")}
    return {
        "index": cli + ["index", "--config", config, *sets, "--embeddings", paths["embeddings"],
                        "--out", paths["index"], *DIRECT_FLAGS],
        "candidates": cli + ["candidates", "--config", config, *sets, "--index", paths["index"],
                             "--embeddings", paths["embeddings"], "--history", paths["history.parquet"],
                             "--out", paths["candidates"], *DIRECT_FLAGS],
        "overlap": [python, "-m", "pipelines.bench.scale", "_overlap", paths["embeddings"], paths["candidates"]],
        # not a Beam pipeline: its launcher is all there is (the sample, a batch, the measures)
        "evaluate": cli + ["evaluate", "--config", config, *sets, "--embeddings", paths["embeddings"],
                           "--catalog", os.path.join(work, "catalog.csv"), "--history", paths["history.parquet"],
                           "--out", os.path.join(work, "evaluation")],
    }


def overlap_main(argv: list[str]) -> int:
    """The nightly overlap report of one night against itself (what the launcher does after candidates)."""
    from pipelines.config import NightlyConfig
    from pipelines.embed.reader import describe_embeddings
    from pipelines.nightly.chain import item2item_files
    from pipelines.nightly.overlap import overlap_report

    embeddings, candidates = argv
    info, lists = describe_embeddings(embeddings), item2item_files(candidates)
    settings = NightlyConfig()
    report = overlap_report(info.files, info.files, lists, lists, settings.overlap_k, info.rows,
                            settings.overlap_rows_per_partition)
    print(json.dumps(report))
    return 0


def bench_size(n: int, args, root: str) -> dict:
    work = os.path.join(root, f"n{n}")
    os.makedirs(os.path.join(work, "embeddings"), exist_ok=True)
    titles = write_embeddings(os.path.join(work, "embeddings"), n, args.dim)
    watches = write_history(os.path.join(work, "history.parquet"), titles)
    if "evaluate" in args.stages:
        write_catalog(work, titles)
    env = {**os.environ, "PYTHONPATH": args.code + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = {"n": n, "watches": watches}
    needed = {STAGES[i] for stage in args.stages for i in range(STAGES.index(stage) + 1)}  # and their inputs
    if args.generated_lists:  # the overlap's item→item lists generated: no index or candidates run for them
        write_item2item(os.path.join(work, "candidates"), titles)
        needed -= {"index", "candidates"}
    for stage, command in stage_commands(work, args.config, args.set).items():
        if stage in args.stages:
            results[stage] = measure(command, env, os.path.join(work, f"{stage}.log"), cwd=args.code)
            shown = {key: value for key, value in results[stage].items() if key != "phases"}
            print(f"  n={n:,} {stage}: {shown}", flush=True)
        elif stage in needed:  # an input of a measured stage (the index for candidates), run but not reported
            measure(command, env, os.path.join(work, f"{stage}.log"), cwd=args.code)
    return results


def table(rows: list[dict], stages) -> str:
    lines = ["| stage | measure | " + " | ".join(f"{r['n']:,}" for r in rows) + " | growth |",
             "|---|---|" + "---:|" * (len(rows) + 1)]
    for stage in stages:
        for key, label in (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("launcher_peak_mb", "launcher peak RSS MB"),
                           ("launcher_anon_mb", "launcher private MB"),
                           ("launcher_own_peak_mb", "launcher own work peak MB"),
                           ("runner_peak_mb", "runner (in launcher) peak MB"),
                           ("runner_left_mb", "runner's memory left in launcher MB"),
                           ("largest_worker_peak_mb", "largest worker peak RSS MB"),
                           ("largest_worker_anon_mb", "largest worker private MB"),
                           ("tree_pss_peak_mb", "process tree PSS peak MB")):
            values = [r[stage].get(key) for r in rows if stage in r]
            if None in values:  # no pipeline in this stage: the launcher is all there is
                continue
            if not values:
                continue
            growth = f"{values[-1] / values[0]:.2f}×" if values[0] else "–"
            lines.append(f"| {stage} | {label} | " + " | ".join(f"{v:,.1f}" for v in values) + f" | {growth} |")
    return "\n".join(lines)


def rerender(rows: list[dict]) -> list[dict]:
    """An earlier run's rows with each stage's launcher split derived from its recorded phases."""
    for row in rows:
        for stage in STAGES:
            if row.get(stage, {}).get("phases"):
                row[stage].update({k: v for k, v in phase_peaks(row[stage]["phases"]).items() if k != "phases"})
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["_overlap"]:
        return overlap_main(argv[1:])
    parser = argparse.ArgumentParser(prog="posters bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="titles, comma-separated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"some of {','.join(STAGES)}")
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--set", action="append", default=[], help="config override handed to every stage")
    parser.add_argument("--code", default=os.getcwd(), help="the checkout whose stages run: each stage's working "
                        "directory (`python -m` puts it first on sys.path) and first on PYTHONPATH")
    parser.add_argument("--generated-lists", action="store_true", help="overlap reads generated item→item lists "
                        "(10 random neighbours a title) instead of running index and candidates for them")
    parser.add_argument("--work", help="where inputs and outputs go (default: a temporary directory, removed)")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--table-from", metavar="JSON", help="print the table of an earlier run's --json again "
                        "(the launcher's own work and the runner's share derived anew from its phase records)")
    args = parser.parse_args(argv)
    args.code = os.path.abspath(args.code)
    if args.table_from:
        print(table(rerender(storage.read_json(args.table_from)["results"]), STAGES))
        return 0
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"--stages: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    if args.generated_lists and {"index", "candidates"} & set(args.stages):
        parser.error("--generated-lists stands in for the index and candidates runs: use it with --stages overlap "
                     "or evaluate only")
    sizes = [int(s) for s in args.sizes.split(",")]
    root = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="posters-bench-scale-")
    try:
        rows = [bench_size(n, args, root) for n in sizes]
    finally:
        if not args.work:
            shutil.rmtree(root, ignore_errors=True)
    print(table(rows, args.stages))
    if args.json:
        storage.write_json(args.json, {"sizes": sizes, "results": rows, "flags": DIRECT_FLAGS})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
