"""`posters bench scale-catalog`: how the catalog read, preprocess and embed grow with the catalog, in memory too.

    posters bench scale-catalog [--sizes 10000,20000,40000] [--distinct D] [--config C] [--set K=V]
                                [--json PATH] [--workdir DIR] [beam options]

For each catalog size N, a catalog of N titles whose small generated posters (64×96 JPEGs) cycle through D
distinct files (generation stays cheap), and each stage run as its own command, as a user runs it, on
DirectRunner `--direct_running_mode=multi_processing --direct_num_workers=2` unless other Beam options are given:
  catalog           ReadCatalog → ValidateCatalogRows → a count (no poster read);
  preprocess        `posters preprocess`;
  embed             `posters embed`, a first run (an untrained export of the config's model);
  embed_unchanged   `posters embed --previous` the first run, on the unchanged catalog (no poster byte read).
Per stage and N: wall seconds, CPU seconds (the command and every worker process it started), the peak RSS of
the launcher and of the largest worker process (VmRSS of the process tree under /proc, sampled every 0.1 s), and
growth against the smallest N (×, for time per title and peak memory). Printed, and written as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import apache_beam as beam

DEFAULT_SIZES = (10_000, 20_000, 40_000)
DEFAULT_DISTINCT = 500
POSTER_SIZE = (64, 96)
DEFAULT_BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
STAGES = ("catalog", "preprocess", "embed", "embed_unchanged")
SAMPLE_S = 0.1


# --- the process tree's memory --------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    """The children of every thread of `pid` (Beam starts its worker processes from a thread of its own)."""
    children = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as handle:
                children.extend(int(child) for child in handle.read().split())
        except OSError:
            pass
    return children


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Samples VmRSS of a process and all its descendants until stopped: the launcher's peak, and the peak of
    the largest single descendant (a Beam worker)."""

    def __init__(self, pid: int):
        self._pid = pid
        self.launcher_kib = 0
        self.worker_kib = 0
        self.workers = set()
        self._ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self.launcher_kib = max(self.launcher_kib, rss_kib(self._pid))
            self._ticks[self._pid] = max(self._ticks.get(self._pid, 0), cpu_ticks(self._pid))
            pending = _children(self._pid)
            while pending:
                pid = pending.pop()
                self.workers.add(pid)
                self.worker_kib = max(self.worker_kib, rss_kib(pid))
                self._ticks[pid] = max(self._ticks.get(pid, 0), cpu_ticks(pid))
                pending.extend(_children(pid))
            self._stop.wait(SAMPLE_S)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the tree as last sampled (a worker the launcher never reaps is not in its rusage)."""
        return sum(self._ticks.values()) / os.sysconf("SC_CLK_TCK")


def measure_command(argv: list[str], env: dict) -> dict:
    """Runs `argv` to the end: wall s, CPU s (it and its reaped descendants), peak RSS MiB (launcher, worker)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeSampler(process.pid) as sampler:
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"bench scale-catalog: {' '.join(argv[:5])} … failed ({process.returncode}):\n"
                         f"{output[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(max(usage.ru_utime + usage.ru_stime, sampler.cpu_s), 2),
            "launcher_peak_mib": round(sampler.launcher_kib / 1024, 1),
            "worker_peak_mib": round(sampler.worker_kib / 1024, 1), "processes": len(sampler.workers)}


# --- the stages -----------------------------------------------------------------------------------------------

def read_catalog_main(argv: list[str]) -> int:
    """The `catalog` stage: `python -m pipelines.bench.scale_catalog read-catalog MANIFEST OUT CONFIG
    [--set K=V …] [beam options]`."""
    from pipelines.common.catalog import ReadCatalog
    from pipelines.common.catalog_rows import ValidateCatalogRows
    from pipelines.common.command_line import make_pipeline
    from pipelines.config import load_config

    manifest, out, config_path, *rest = argv
    overrides = [value for flag, value in zip(rest, rest[1:]) if flag == "--set"]
    beam_args = [arg for i, arg in enumerate(rest) if arg != "--set" and (i == 0 or rest[i - 1] != "--set")]
    config = load_config(config_path, overrides)
    with make_pipeline(config, beam_args, save_main_session=False) as pipeline:  # the stages' own runner set-up
        rows, _ = pipeline | "ReadCatalog" >> ReadCatalog(manifest, config.catalog)
        titles, _ = rows | "ValidateCatalogRows" >> ValidateCatalogRows(config.preprocess.duplicate_title_policy)
        _ = (titles | "Count" >> beam.combiners.Count.Globally()
             | "Write" >> beam.Map(lambda n: open(out, "w").write(str(n))))
    return 0


def stage_commands(stage: str, catalog: str, model: str, workdir: str, n: int, common: list[str],
                   beam_args: list[str]) -> list[str]:
    python = [sys.executable, "-m"]
    out = os.path.join(workdir, f"{stage}-{n}")
    if stage == "catalog":
        return [*python, "pipelines.bench.scale_catalog", "read-catalog", catalog, out, *common[1:], *beam_args]
    if stage == "preprocess":
        return [*python, "pipelines.cli", "preprocess", "--catalog", catalog, "--out", out, *common, *beam_args]
    if stage == "embed":
        return [*python, "pipelines.cli", "embed", "--catalog", catalog, "--model", model, "--out", out, *common,
                *beam_args]
    previous = os.path.join(workdir, f"embed-{n}")
    return [*python, "pipelines.cli", "embed", "--catalog", catalog, "--model", model, "--out", out,
            "--previous", previous, *common, *beam_args]


def make_catalog(workdir: str, n: int, distinct: int, seed: int) -> str:
    """A manifest of `n` titles cycling over `distinct` generated posters (shared by every size)."""
    import csv

    from pipelines.synthetic.catalog import generate_catalog

    base = os.path.join(workdir, "posters")
    if not os.path.exists(os.path.join(base, "catalog.csv")):
        generate_catalog(base, n=distinct, seed=seed, width=POSTER_SIZE[0], height=POSTER_SIZE[1])
    with open(os.path.join(base, "catalog.csv"), newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    manifest = os.path.join(base, f"catalog-{n}.csv")
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for index in range(n):
            row = dict(rows[index % len(rows)])
            row["title_id"] = f"{row['title_id']}-{index // len(rows)}"
            writer.writerow(row)
    return manifest


def export_model(workdir: str, config: str, overrides: list[str], env: dict) -> str:
    model = os.path.join(workdir, "model")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "export-model", "--config", config, "--out", model,
                    *[arg for item in overrides for arg in ("--set", item)]], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return model


# --- the report -----------------------------------------------------------------------------------------------

def with_growth(results: list[dict]) -> list[dict]:
    """Adds, per row, growth against the same stage at the smallest N: time per title and peak memory (×)."""
    first = {}
    for row in results:
        base = first.setdefault(row["stage"], row)
        row["wall_per_title_x"] = round((row["wall_s"] / row["n"]) / (base["wall_s"] / base["n"]), 2)
        for key in ("launcher_peak_mib", "worker_peak_mib"):
            row[key.replace("_mib", "_x")] = round(row[key] / base[key], 2) if base[key] else None
    return results


def report_lines(results: list[dict]) -> list[str]:
    lines = ["| stage | N | wall s | CPU s | launcher peak MiB | largest worker peak MiB | wall/title × | "
             "worker peak × |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in sorted(results, key=lambda r: (STAGES.index(r["stage"]), r["n"])):
        lines.append(f"| {row['stage']} | {row['n']:,} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
                     f"{row['launcher_peak_mib']:,.0f} | {row['worker_peak_mib']:,.0f} | "
                     f"{row['wall_per_title_x']:.2f} | {row['worker_peak_x'] or 0:.2f} |")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["read-catalog"]:
        return read_catalog_main(argv[1:])
    parser = argparse.ArgumentParser(prog="posters bench scale-catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="catalog sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--distinct", type=int, default=DEFAULT_DISTINCT, help="distinct posters generated")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to run (default: %(default)s)")
    parser.add_argument("--config", default="local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--workdir", help="keep inputs and outputs here (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0)
    args, beam_args = parser.parse_known_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    stages = [stage for stage in STAGES if stage in args.stages.split(",")]
    beam_args = beam_args or DEFAULT_BEAM_ARGS
    common = ["--config", args.config, *[arg for item in args.overrides for arg in ("--set", item)],
              "--set", "embed.max_reject_fraction=1", "--set", "preprocess.max_reject_fraction=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    workdir = args.workdir or tempfile.mkdtemp(prefix="posters-bench-scale-")
    model = export_model(workdir, args.config, args.overrides, env) if {"embed", "embed_unchanged"} & set(stages) \
        else ""
    results = []
    for n in sizes:
        catalog = make_catalog(workdir, n, min(n, args.distinct), args.seed)
        for stage in stages:
            figures = measure_command(stage_commands(stage, catalog, model, workdir, n, common, beam_args), env)
            results.append({"stage": stage, "n": n, **figures})
            print(f"scale-catalog: {stage} N={n:,}: {figures}", flush=True)
    results = with_growth(results)
    print("\n".join(["", f"posters bench scale-catalog (Beam options: {' '.join(beam_args)}; "
                         f"{args.distinct} distinct {POSTER_SIZE[0]}×{POSTER_SIZE[1]} posters cycled)",
                     *report_lines(results)]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"beam_args": beam_args, "distinct": args.distinct, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
