"""`posters bench scale-catalog`: how the catalog read, preprocess and embed grow with the catalog, in memory too.

    posters bench scale-catalog [--sizes 10000,20000,40000] [--distinct D] [--config C] [--set K=V]
                                [--json PATH] [--workdir DIR] [beam options]

For each catalog size N, a catalog of N titles whose small generated posters (64×96 JPEGs) cycle through D
distinct files (generation stays cheap), and each stage run as its own command, as a user runs it, on
DirectRunner `--direct_running_mode=multi_processing --direct_num_workers=2` unless other Beam options are given:
  catalog           ReadCatalog → ValidateCatalogRows → a count (no poster read);
  preprocess        `posters preprocess`;
  embed             `posters embed`, a first run (an untrained export of the config's model);
  embed_unchanged   `posters embed --previous` the first run, on the unchanged catalog (no poster byte read);
  embed_changed     `posters embed --previous` the first run, after 1 % of the distinct posters were rewritten
                    (so 1 % of the titles' posters changed): it should read about 1 % of the first run's bytes.
The embed stages also report `poster_bytes_read` from their `_stats.json`, and the changed run its share of the
first run's.
Per stage and N, measured as `posters bench scale` measures (`pipelines.bench.scale.measure`): wall and CPU
seconds (the command and every worker process it started); the launcher's own work (config, manifests, the
graph, gates, publishing) apart from the DirectRunner it hosts, which holds the data between stages that
Dataflow's service would hold; the largest worker process's peak (VmHWM); the process tree's PSS peak; and
growth against the smallest N (×). Printed, and written as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import apache_beam as beam

from pipelines.bench import scale

DEFAULT_SIZES = (10_000, 20_000, 40_000)
DEFAULT_DISTINCT = 500
POSTER_SIZE = (64, 96)
DEFAULT_BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
STAGES = ("catalog", "preprocess", "embed", "embed_unchanged", "embed_changed")
CHANGED_FRACTION = 0.01


# --- measuring a stage ------------------------------------------------------------------------------------------

def measure_command(argv: list[str], env: dict, log_path: str) -> dict:
    """Runs `argv` to the end and measures its process tree the way `posters bench scale` does
    (`pipelines.bench.scale.measure`): the launcher's own work apart from the runner it hosts, the largest
    worker, the tree's PSS, wall and CPU seconds."""
    try:
        return scale.measure(argv, env, log_path)
    except RuntimeError as error:
        with open(log_path) as handle:
            raise SystemExit(f"bench scale-catalog: {error}:\n{handle.read()[-3000:]}") from error


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
    previous = os.path.join(workdir, f"embed-{n}")  # embed_unchanged and embed_changed
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


def change_posters(catalog_dir: str, fraction: float) -> list[str]:
    """Rewrites the first `fraction` (at least one) of the catalog's readable posters with their colours inverted, so
    that their size, time and hash change; returns the files rewritten."""
    import csv

    from PIL import Image

    with open(os.path.join(catalog_dir, "catalog.csv"), newline="") as handle:
        paths = [os.path.join(catalog_dir, row["poster_uri"]) for row in csv.DictReader(handle) if row["poster_uri"]]
    changed, wanted = [], max(1, round(fraction * len(paths)))
    for path in paths:
        if len(changed) == wanted:
            break
        try:
            with Image.open(path) as image:
                inverted = Image.eval(image.convert("RGB"), lambda value: 255 - value)
        except (OSError, ValueError):  # the generator's deliberately broken posters
            continue
        inverted.save(path, format="JPEG", quality=90)
        changed.append(path)
    return changed


def poster_bytes_read(out: str) -> int:
    with open(os.path.join(out, "_stats.json")) as handle:
        return json.load(handle)["poster_bytes_read"]


def export_model(workdir: str, config: str, overrides: list[str], env: dict) -> str:
    model = os.path.join(workdir, "model")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "export-model", "--config", config, "--out", model,
                    *[arg for item in overrides for arg in ("--set", item)]], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return model


# --- the report -----------------------------------------------------------------------------------------------

GROWTH_KEYS = ("launcher_own_peak_mb", "largest_worker_peak_mb", "tree_pss_peak_mb")
COLUMNS = (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("launcher_own_peak_mb", "launcher own work peak MB"),
           ("runner_peak_mb", "runner (in launcher) peak MB"), ("largest_worker_peak_mb", "largest worker peak MB"),
           ("tree_pss_peak_mb", "process tree PSS peak MB"))


def with_growth(results: list[dict]) -> list[dict]:
    """Adds, per row, growth against the same stage at the smallest N: time per title and memory (×)."""
    first = {}
    for row in results:
        base = first.setdefault(row["stage"], row)
        row["wall_per_title_x"] = round((row["wall_s"] / row["n"]) / (base["wall_s"] / base["n"]), 2)
        for key in GROWTH_KEYS:
            row[key.replace("_mb", "_x")] = round(row[key] / base[key], 2) if base.get(key) else None
    return results


def _cell(value) -> str:
    return "–" if value is None else f"{value:,.1f}"


def report_lines(results: list[dict]) -> list[str]:
    growth = [key.replace("_mb", "_x") for key in GROWTH_KEYS]
    lines = ["| stage | N | " + " | ".join(label for _, label in COLUMNS) + " | wall/title × | own work × | "
             "largest worker × | PSS × |", "| --- | ---: |" + " ---: |" * (len(COLUMNS) + 1 + len(growth))]
    for row in sorted(results, key=lambda r: (STAGES.index(r["stage"]), r["n"])):
        cells = [_cell(row.get(key)) for key, _ in COLUMNS] + [f"{row['wall_per_title_x']:.2f}"]
        cells += ["–" if row.get(key) is None else f"{row[key]:.2f}" for key in growth]
        lines.append(f"| {row['stage']} | {row['n']:,} | " + " | ".join(cells) + " |")
    return lines


def bytes_lines(results: list[dict]) -> list[str]:
    """Per N: the poster bytes each embed run read, and the incremental runs' share of the first run's."""
    lines = []
    for n in sorted({row["n"] for row in results if "poster_bytes_read" in row}):
        runs = [row for row in results if row["n"] == n and "poster_bytes_read" in row]
        parts = [f"{row['stage']} {row['poster_bytes_read']:,}" + (f" ({row['share_of_first_run_bytes']:.2%} of the "
                 "first run's)" if "share_of_first_run_bytes" in row else "") for row in runs]
        lines.append(f"poster bytes read, N={n:,}: " + "; ".join(parts))
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
    model = export_model(workdir, args.config, args.overrides, env) if {"embed", "embed_unchanged",
                                                                        "embed_changed"} & set(stages) else ""
    results = []
    for n in sizes:
        catalog = make_catalog(workdir, n, min(n, args.distinct), args.seed)
        for stage in stages:
            if stage == "embed_changed":
                change_posters(os.path.dirname(catalog), CHANGED_FRACTION)
            figures = measure_command(stage_commands(stage, catalog, model, workdir, n, common, beam_args), env,
                                      os.path.join(workdir, f"{stage}-{n}.log"))
            figures.pop("phases", None)
            if stage.startswith("embed"):
                figures["poster_bytes_read"] = poster_bytes_read(os.path.join(workdir, f"{stage}-{n}"))
            if stage != "embed" and "poster_bytes_read" in figures:
                first = next((r for r in results if r["stage"] == "embed" and r["n"] == n), None)
                if first and first["poster_bytes_read"]:
                    figures["share_of_first_run_bytes"] = round(figures["poster_bytes_read"]
                                                                / first["poster_bytes_read"], 4)
            results.append({"stage": stage, "n": n, **figures})
            shown = [key for key, _ in COLUMNS] + ["poster_bytes_read", "share_of_first_run_bytes"]
            print(f"scale-catalog: {stage} N={n:,}: " + ", ".join(f"{key} {figures[key]}" for key in shown
                                                                  if key in figures), flush=True)
    results = with_growth(results)
    print("\n".join(["", f"posters bench scale-catalog (Beam options: {' '.join(beam_args)}; "
                         f"{args.distinct} distinct {POSTER_SIZE[0]}×{POSTER_SIZE[1]} posters cycled)",
                     *report_lines(results), "", *bytes_lines(results)]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"beam_args": beam_args, "distinct": args.distinct, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
