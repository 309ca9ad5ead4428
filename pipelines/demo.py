"""`posters demo`: the main job end to end on the embedded synthetic catalog, on DirectRunner.

generate catalog → preprocess → train → embed → index → candidates → the similar and mix pictures → evaluate
(report.html), each stage through its own command (exactly what a user would run), then one short summary of
what was made and where, ending with the report's path.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

from pipelines.common import storage
from pipelines.contracts import STATS_FILE


def _stage(module: str, function: str = "main"):
    return getattr(importlib.import_module(module), function)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run_demo(config: str, out: Path, n: int, seed: int, overrides: list[str]) -> dict:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = ["--config", config] + [arg for item in overrides for arg in ("--set", item)]
    paths = {name: out / name for name in ("catalog", "preprocessed", "training", "embeddings", "index",
                                           "candidates", "evaluation")}
    timings: dict[str, float] = {}

    def timed(name, call):
        print(f"\n=== {name} ===", flush=True)
        started = time.time()
        result = call()
        timings[name] = round(time.time() - started, 1)
        if isinstance(result, int) and result != 0:
            raise SystemExit(f"demo: stage {name} failed with exit code {result}")
        return result

    timed("generate-catalog", lambda: _stage("pipelines.synthetic.catalog", "generate_catalog")(
        str(paths["catalog"]), n=n, seed=seed, bad_fraction=0.02, width=150, height=225,
        preview=str(out / "catalog_preview.png")))
    catalog = str(paths["catalog"] / "catalog.csv")
    timed("preprocess", lambda: _stage("pipelines.preprocess.pipeline")(
        common + ["--catalog", catalog, "--out", str(paths["preprocessed"])]))
    timed("train", lambda: _stage("trainer.train")(
        common + ["--data", str(paths["preprocessed"]), "--out", str(paths["training"])]))
    model = str(paths["training"] / "model")
    timed("embed", lambda: _stage("pipelines.embed.pipeline")(
        common + ["--catalog", catalog, "--model", model, "--out", str(paths["embeddings"])]))
    timed("index", lambda: _stage("pipelines.index.pipeline")(
        common + ["--embeddings", str(paths["embeddings"]), "--out", str(paths["index"])]))
    history = str(out / "watch_history.csv")
    timed("watch-history", lambda: _stage("pipelines.synthetic.watch_history", "generate_watch_history")(
        catalog, history, n_users=200, seed=seed))
    timed("candidates", lambda: _stage("pipelines.candidates.pipeline")(
        common + ["--index", str(paths["index"]), "--embeddings", str(paths["embeddings"]), "--history", history,
                  "--out", str(paths["candidates"])]))
    pictures = _pictures(common, out, paths, catalog)
    timed("similar+mix", pictures)
    # The demo reports the gates; it does not enforce them (no --fail-on-gates).
    timed("evaluate", lambda: _stage("pipelines.evaluate.command")(
        common + ["--embeddings", str(paths["embeddings"]), "--catalog", catalog, "--model", model,
                  "--preprocess", str(paths["preprocessed"]),
                  "--history", history, "--index", str(paths["index"]), "--training", str(paths["training"]),
                  "--out", str(paths["evaluation"])]))
    return _summary(out, paths, timings)


def _pictures(common: list[str], out: Path, paths: dict, catalog: str):
    def draw():
        from pipelines.common.catalog import read_catalog
        from pipelines.config import load_config

        rows = read_catalog(catalog, load_config(common[1]).catalog)
        bad = {row["title_id"] for row in _read_json_list(paths["catalog"] / "bad_rows.json")}
        good = [row.title_id for row in rows if row.title_id not in bad]
        # A horror-ish and a comedy-ish title make the mix picture tell a story; any two good titles will do.
        first = next((r.title_id for r in rows if r.title_id in good and r.genres[:1] == ("Horror",)), good[0])
        second = next((r.title_id for r in rows if r.title_id in good and r.genres[:1] == ("Comedy",)), good[1])
        base = common + ["--index", str(paths["index"]), "--catalog", catalog]
        code = _stage("pipelines.similar.contact_sheets", "similar_main")(
            base + [first, "-k", "10", "--out", str(out / "similar.png")])
        return code or _stage("pipelines.similar.contact_sheets", "mix_main")(base + [first, second, "-k", "10",
                                                                     "--out", str(out / "mix.png")])
    return draw


def _read_json_list(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def _summary(out: Path, paths: dict, timings: dict) -> dict:
    stats = _read_json(paths["preprocessed"] / STATS_FILE)
    metrics = _read_json(paths["training"] / "eval_metrics.json")
    evaluation = _read_json(paths["evaluation"] / "evaluation.json")
    summary = {
        "timings_s": timings,
        "catalog": {"read": stats.get("read"), "accepted": stats.get("accepted"), "rejected": stats.get("rejected"),
                    "rejected_by_reason": stats.get("rejected_by_reason")},
        "precision_at_10": {name: metrics.get(name, {}).get("precision_at_10") for name in
                            ("baseline", "phase1", "phase2")},
        "evaluation": _evaluation_figures(evaluation),
        "outputs": {name: str(path) for name, path in paths.items()} | {
            "catalog_preview": str(out / "catalog_preview.png"), "training_curves":
            str(paths["training"] / "training_curves.png"), "similar": str(out / "similar.png"),
            "mix": str(out / "mix.png"), "report": str(paths["evaluation"] / "report.html")},
    }
    storage.write_json(str(out / "demo_summary.json"), summary)
    return summary


def _evaluation_figures(evaluation: dict) -> dict:
    """The headline numbers of evaluation.json for the summary (None where not measured)."""
    k = evaluation.get("k", 10)
    retrieval = evaluation.get("retrieval", {})
    methods = (evaluation.get("candidates") or {}).get("methods", {})
    near = (evaluation.get("near_duplicates") or {}).get("embedding", {})
    return {"precision_at_k": {name: values.get(f"precision_at_{k}") for name, values in retrieval.items()},
            "near_duplicate_recall": {"at_1": near.get("recall_at_1"), "at_10": near.get("recall_at_10")},
            "hit_rate_at_k": {name: values.get(f"hit_rate_at_{k}") for name, values in methods.items()},
            "k": k, "gate_failures": (evaluation.get("gates") or {}).get("failures")}


def print_summary(summary: dict) -> None:
    catalog, p10 = summary["catalog"], summary["precision_at_10"]
    print("\n=== poster similarity demo: done ===")
    print(f"catalog: {catalog['read']} posters read, {catalog['accepted']} accepted, {catalog['rejected']} rejected "
          f"{catalog['rejected_by_reason']}")
    print("metric learning, precision@10 on the eval split (share of neighbours sharing a genre):")
    for name in ("baseline", "phase1", "phase2"):
        value = p10[name]
        print(f"  {name:<8} {value:.3f}" if value is not None else f"  {name:<8} n/a")
    figures = summary["evaluation"]
    if figures["precision_at_k"]:
        k = figures["k"]
        print(f"evaluation (posters evaluate), precision@{k} on the eval split: " + ", ".join(
            f"{name} {value:.3f}" for name, value in figures["precision_at_k"].items() if value is not None))
        near = figures["near_duplicate_recall"]
        if near["at_1"] is not None:
            print(f"  near-duplicates found in the catalog: recall@1 {near['at_1']:.3f}, recall@10 {near['at_10']:.3f}")
        print(f"  candidates, hit rate@{k} on held-out last watches: " + ", ".join(
            f"{name} {value:.3f}" for name, value in figures["hit_rate_at_k"].items()))
        failures = figures["gate_failures"] or []
        print("  gates: " + ("all passed" if not failures else "; ".join(failures)))
    print("stage timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    for name, path in summary["outputs"].items():
        print(f"  {name:<16} {path}")
    print(f"report: {summary['outputs']['report']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="local.yaml")
    parser.add_argument("--out", default="demo_out", help="directory for everything the demo makes")
    parser.add_argument("--n", type=int, default=1200, help="posters in the synthetic catalog")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    summary = run_demo(args.config, Path(args.out), args.n, args.seed, args.overrides)
    print_summary(summary)
    return 0
