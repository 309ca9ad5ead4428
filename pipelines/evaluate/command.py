"""`posters evaluate`: what the embeddings and the candidates are worth, written as evaluation.json + report.html.

    posters evaluate --embeddings URI --catalog URI --out DIR [--preprocess DIR] [--model URI] [--history URI]
                     [--index URI]                     [--training DIR] [--previous evaluation.json] [--fail-on-gates]

    embeddings ─▶ a stable sample of about evaluate.max_titles (pipelines.evaluate.sample; all of a small catalog)
    sample + catalog     ─▶ retrieval by genre on the eval split: the embedding, random vectors, colour histogram,
                            colour thumbnail (and train's baseline/phase1/phase2 from --training)
                          ─▶ pair distances same-genre vs different-genre, separation
    + model              ─▶ near-duplicates: 4 edited copies of eval posters find their original in the catalog
    + history (+ index)  ─▶ candidates against held-out last watches, beside most-watched and random
                          ─▶ UMAP map, Embedding Projector export, similar-poster grids, the mix
                          ─▶ gates (pipelines.evaluate.gates) → evaluation.json, report.html, pictures/, projector/

Every measure is taken among the sampled titles, read in batches: the launcher holds the sample, never the whole
catalog or its embeddings. The eval split is the preprocess' own (`pipelines.common.splits`: a stable hash of the
title's duplicate-poster group, read from `--preprocess DIR`'s `duplicate_groups/`, below
`preprocess.eval_fraction`), so the numbers are for posters the model did not train on. Without --preprocess
titles split by title_id alone, which puts a poster shared by titles of both splits on both sides (the report says
so). Everything is seeded by `evaluate.seed`: the same inputs give the same evaluation. The output directory is
written to staging and published whole (`_SUCCESS` last).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from pipelines.common import retrieval_metrics as rm
from pipelines.common import storage
from pipelines.common.command_line import command_parser, parse_command
from pipelines.common.posters import fetch_poster
from pipelines.common.splits import EVAL, read_duplicate_groups, split_of
from pipelines.config import Config, HttpConfig
from pipelines.contracts import (
    EVAL_METRICS_FILE,
    EVALUATION_FILE,
    EVALUATION_PICTURES_DIR,
    EVALUATION_PROJECTOR_DIR,
    EVALUATION_REPORT_FILE,
    TRAINING_CURVES_FILE,
)
from pipelines.embed.reader import Embeddings, EmbeddingsError
from pipelines.evaluate import embedding_map, held_out, near_duplicates, pictures, reference
from pipelines.evaluate.gates import check_gates
from pipelines.evaluate.report import PosterRow, PosterTile, report_html, thumbnail_jpeg
from pipelines.evaluate.sample import Sample, read_sample, sampled_catalog, sampled_watches

GRID_NEIGHBOURS = 8
TRAIN_EMBEDDINGS = ("baseline", "phase1", "phase2")


class Posters:
    """Encoded posters by title_id, read once from the catalog's `poster_uri` (any URI `fetch_poster` reads; None
    when unreadable)."""

    def __init__(self, uris: dict[str, str], http: HttpConfig | None = None):
        self._uris, self._cache, self._http = uris, {}, http or HttpConfig()

    def get(self, title_id: str) -> Optional[bytes]:
        if title_id not in self._cache:
            try:
                self._cache[title_id] = fetch_poster(self._uris[title_id], self._http).data
            except Exception:  # noqa: BLE001 — a poster that cannot be read is left out, and counted by callers
                self._cache[title_id] = None
        return self._cache[title_id]


def label_matrix(genres: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    vocabulary = sorted({g for items in genres for g in items})
    column = {g: i for i, g in enumerate(vocabulary)}
    labels = np.zeros((len(genres), len(vocabulary)), np.float32)
    for row, items in enumerate(genres):
        labels[row, [column[g] for g in items]] = 1.0
    return labels, vocabulary


def _sample(rows: Sequence[int], limit: int, seed: int) -> list[int]:
    rows = list(rows)
    if len(rows) <= limit:
        return rows
    return sorted(np.random.default_rng(seed).choice(rows, size=limit, replace=False).tolist())


# --- the measures ----------------------------------------------------------------------------------------------
def retrieval_section(embeddings: Embeddings, rows: list[int], posters: Posters, config: Config,
                      training: Optional[str]) -> tuple[dict, dict, dict]:
    """(retrieval by name, distances by name, pair distances of the embedding) on the eval rows."""
    k, seed = config.evaluate.k, config.evaluate.seed
    labels, vocabulary = label_matrix([embeddings.genres[r] for r in rows])
    readable = [r for r in rows if posters.get(embeddings.title_ids[r]) is not None]
    features = {"embedding": embeddings.vectors[rows],
                "random": reference.random_vectors(len(rows), embeddings.dim, seed)}
    if len(readable) == len(rows):
        features.update(reference.image_features([posters.get(embeddings.title_ids[r]) for r in rows]))
    else:
        print(f"evaluate: {len(rows) - len(readable)} eval posters could not be read from the catalog: the image "
              "feature reference points are left out", file=sys.stderr)
    retrieval = {name: rm.retrieval_metrics(vectors, labels, k, vocabulary) for name, vectors in features.items()}
    if training and storage.exists(storage.join(training, EVAL_METRICS_FILE)):
        trained = storage.read_json(storage.join(training, EVAL_METRICS_FILE))
        retrieval.update({f"train {name}": trained[name] for name in TRAIN_EMBEDDINGS if name in trained})
    distances, pairs = {}, {}
    for name, vectors in features.items():
        same, different = rm.genre_pair_distances(vectors, labels)
        distances[name] = rm.separation(same, different)
        pairs[name] = (same, different)
    return retrieval, distances, pairs


def near_duplicate_section(embeddings: Embeddings, eval_rows: list[int], posters: Posters, model_uri: str,
                           config: Config, whole: bool = True) -> dict:
    """Recall@1/@10 of edited copies of eval posters against every title of `embeddings` (the sample: the whole
    catalog when `whole`), for the model and the references."""
    from pipelines.common.exported_model import load_exported_model

    embed, meta = load_exported_model(model_uri)
    if meta.get("model_version") != embeddings.model_version:
        raise EmbeddingsError(f"the model at {model_uri} is {meta.get('model_version')} but the embeddings are "
                              f"{embeddings.model_version}'s: pass the model the embeddings were made with")
    picked = [r for r in eval_rows if posters.get(embeddings.title_ids[r])][:config.evaluate.near_duplicate_posters]
    copies = near_duplicates.near_duplicate_copies([(embeddings.title_ids[r], posters.get(embeddings.title_ids[r]))
                                                    for r in picked], config.evaluate.seed)
    row_of = {t: r for r, t in enumerate(embeddings.title_ids)}
    originals = np.array([row_of[title] for title, _, _ in copies])
    edits = [edit for _, edit, _ in copies]
    vectors = np.concatenate([embed([c for _, _, c in copies[i:i + 64]]) for i in range(0, len(copies), 64)])
    result = {"posters": len(picked), "database": len(embeddings),
              "note": f"{len(picked)} {'eval ' if config.evaluate.retrieval_split == 'eval' else ''}posters × "
                      f"{len(near_duplicates.EDITS)} edits "
                      f"({', '.join(near_duplicates.EDITS)}) queried against "
                      + (f"all {len(embeddings)} catalog titles" if whole else
                         f"the {len(embeddings)} sampled titles (evaluate.max_titles)"),
              "embedding": near_duplicates.near_duplicate_recall(vectors, originals, embeddings.vectors, edits)}
    if whole and len(embeddings) <= config.evaluate.reference_max_titles:
        catalog = [posters.get(t) for t in embeddings.title_ids]
        if any(p is None for p in catalog):
            result["note"] += "; image feature references left out (unreadable catalog posters)"
        else:
            database = reference.image_features(catalog)
            queries = reference.image_features([c for _, _, c in copies])
            for name in database:
                result[name] = near_duplicates.near_duplicate_recall(queries[name], originals, database[name], edits)
    return result


def candidates_section(embeddings: Embeddings, history_uri: str, index_uri: Optional[str], config: Config,
                       whole: bool = True) -> dict:
    """Candidates against held-out watches, on the watches of the titles in `embeddings` (the sample), searched
    in the published index when the sample is the whole catalog, else exactly among the sampled titles."""
    events, skipped = sampled_watches(history_uri, set(embeddings.title_ids))
    vectors = {t: embeddings.vectors[r] for r, t in enumerate(embeddings.title_ids)}
    genres = dict(zip(embeddings.title_ids, embeddings.genres))
    if index_uri and whole:
        from pipelines.index.loader import load_index

        index = load_index(index_uri, expected_model_version=embeddings.model_version)
        search, searched = index.search, f"index {index.version}"
    else:
        search, searched = held_out.exact_search(embeddings.title_ids, embeddings.vectors), "exact search"
        if not whole:
            searched = (f"exact search among the {len(embeddings)} sampled titles"
                        + (" (the index holds titles outside the sample: not searched)" if index_uri else ""))
    result = held_out.evaluate_candidates(events, vectors, genres, search, config.evaluate.k,
                                          config.evaluate.holdout_last, config.candidates.recency_half_life_days,
                                          config.evaluate.seed)
    return {**result, "searched": searched, "history": history_uri, "rows_skipped": skipped}


def map_and_projector(embeddings: Embeddings, posters: Posters, staging: str, config: Config) -> tuple[dict, bytes]:
    settings = config.evaluate
    rows = _sample(range(len(embeddings)), settings.map_max_points, settings.seed)
    primary = [(embeddings.genres[r] or ["(none)"])[0] for r in rows]
    projection = embedding_map.projection_for(settings.map_projection, len(rows))
    points = embedding_map.project_2d(embeddings.vectors[rows], projection, settings.seed)
    drawn = {i: posters.get(embeddings.title_ids[rows[i]]) for i in
             embedding_map.spread_rows(primary, settings.map_posters, settings.seed)}
    png = embedding_map.map_png(points, primary, {i: p for i, p in drawn.items() if p},
                                f"{projection.upper()} of {len(rows)} titles (cosine)")
    metadata = [{"title_id": embeddings.title_ids[r], "primary_genre": primary[i],
                 "genres": "|".join(embeddings.genres[r])} for i, r in enumerate(rows)]
    sprite_posters = [posters.get(embeddings.title_ids[r]) for r in rows]
    projector = embedding_map.write_projector(storage.join(staging, EVALUATION_PROJECTOR_DIR),
                                              embeddings.vectors[rows], metadata, sprite_posters,
                                              f"posters {embeddings.model_version}")
    return {**projector, "directory": EVALUATION_PROJECTOR_DIR + "/", "projection": projection}, png


def poster_grids(embeddings: Embeddings, posters: Posters, titles: dict[str, str],
                 config: Config) -> tuple[list[PosterRow], Optional[PosterRow]]:
    """Similar-poster rows for titles spread across primary genres (query + 8 neighbours), and the mix of two of
    them (2 + 7)."""
    from pipelines.candidates.watch_history import weighted_query

    primary = [(g or ["(none)"])[0] for g in embeddings.genres]
    picked = embedding_map.spread_rows(primary, config.evaluate.report_titles, config.evaluate.seed)

    def tile(row: int, note: str) -> PosterTile:
        title_id = embeddings.title_ids[row]
        return PosterTile(thumbnail_jpeg(posters.get(title_id)), titles.get(title_id) or title_id,
                          f"{primary[row]} · {note}")

    unit = rm.normalise(embeddings.vectors)

    def neighbours(query: np.ndarray, exclude: set[int]) -> list[PosterTile]:
        scores = unit @ query
        order = [i for i in np.argsort(-scores, kind="stable") if i not in exclude][:GRID_NEIGHBOURS + 1 - len(exclude)]
        return [tile(i, f"#{rank} {scores[i]:.2f}") for rank, i in enumerate(order, 1)]

    grids = [PosterRow(f"{titles.get(embeddings.title_ids[r]) or embeddings.title_ids[r]} ({primary[r]})",
                       [tile(r, "query")], neighbours(unit[r], {r})) for r in picked]
    mix = None
    if len(picked) >= 2:
        a, b = picked[0], picked[len(picked) // 2]  # two genres apart in the round-robin
        query = weighted_query(unit[[a, b]], np.ones(2))
        if query is not None:
            mix = PosterRow(f"mix of {primary[a]} and {primary[b]}: neighbours of the averaged embedding",
                            [tile(a, "mixed"), tile(b, "mixed")], neighbours(query, {a, b}))
    return grids, mix


# --- the command -----------------------------------------------------------------------------------------------
def _timed(label: str, call):
    started = time.time()
    result = call()
    print(f"evaluate: {label} in {time.time() - started:.1f} s", flush=True)
    return result


def eval_split_rows(embeddings: Embeddings, config: Config, groups: dict[str, str] | None = None) -> list[int]:
    """Rows of the embedded titles with genres in `evaluate.retrieval_split` (the eval split, or all), a seeded
    sample of `retrieval_max_queries` when there are more; `groups`: preprocess' duplicate groups."""
    k, fraction, split = config.evaluate.k, config.preprocess.eval_fraction, config.evaluate.retrieval_split
    rows = [r for r, t in enumerate(embeddings.title_ids)
            if embeddings.genres[r] and (split == "all" or split_of(t, fraction, groups) == EVAL)]
    if len(rows) <= k:
        raise ValueError(f"only {len(rows)} embedded titles with genres are in evaluate.retrieval_split {split!r} "
                         f"(preprocess.eval_fraction {fraction}); retrieval@{k} needs more than {k}: lower "
                         "evaluate.k, or set evaluate.retrieval_split=all")
    return _sample(rows, config.evaluate.retrieval_max_queries, config.evaluate.seed)


def _header(args, sample: Sample, config: Config, eval_rows: list[int]) -> dict:
    embeddings = sample.embeddings
    split = config.evaluate.retrieval_split
    titles = f"{len(eval_rows)} eval-split titles" if split == "eval" else f"{len(eval_rows)} titles (all splits)"
    if split == "eval":
        titles += (" (split by duplicate-poster group, as preprocess split them)" if args.preprocess else
                   " (split by title_id alone: no --preprocess, so a poster shared across splits is on both sides)")
    return {"k": config.evaluate.k, "created": storage.utc_now(), "model_version": embeddings.model_version,
            "inputs": {"embeddings": args.embeddings, "catalog": args.catalog, "preprocess": args.preprocess,
                       "model": args.model,
                       "history": args.history, "index": args.index, "training": args.training},
            "sample": {**sample.describe(), "note": (
                "every title of the catalog" if sample.whole else
                f"the {len(embeddings)} of {sample.catalog_titles} titles whose stable hash falls below "
                f"{sample.fraction:.6f} (evaluate.max_titles {config.evaluate.max_titles}); every measure is "
                "taken among them")},
            "retrieval_sample": {"split": split, "titles": len(eval_rows), "note": (
                f"{titles}, each ranked against the others by cosine; relevant = shares a genre with the query (by "
                "genre: carries that genre). Rows 'train …' are train's own eval-split figures for its three "
                "embeddings.")}}


def evaluate(config: Config, args, staging: str) -> tuple[dict, dict[str, bytes], list, Optional[PosterRow]]:
    """Every measure the inputs allow → (evaluation, charts by name, similar-poster rows, the mix row)."""
    sample = _timed("sample", lambda: read_sample(args.embeddings, config.evaluate.max_titles))
    embeddings, whole = sample.embeddings, sample.whole
    catalog = sampled_catalog(args.catalog, config.catalog, set(embeddings.title_ids))
    posters = Posters({t: row.poster_uri for t, row in catalog.items() if row.poster_uri}, config.http)
    settings, k = config.evaluate, config.evaluate.k
    groups = read_duplicate_groups(args.preprocess, set(embeddings.title_ids)) if args.preprocess else None
    eval_rows = eval_split_rows(embeddings, config, groups)
    retrieval, distances, pairs = _timed("retrieval", lambda: retrieval_section(
        embeddings, eval_rows, posters, config, args.training))
    evaluation = {**_header(args, sample, config, eval_rows), "retrieval": retrieval, "distances": distances}
    charts = {"retrieval_by_genre": pictures.retrieval_by_genre_png(retrieval, k),
              "distance_histograms": pictures.distance_histograms_png(*pairs["embedding"], distances["embedding"],
                                                                      "the embedding")}
    if args.model:
        evaluation["near_duplicates"] = _timed("near-duplicates", lambda: near_duplicate_section(
            embeddings, eval_rows, posters, args.model, config, whole))
        near = {n: v for n, v in evaluation["near_duplicates"].items() if isinstance(v, dict)}
        charts["near_duplicates"] = pictures.grouped_bars_png(near, ["recall_at_1", "recall_at_10"],
                                                              "near-duplicates found in the whole catalog")
    if args.history:
        evaluation["candidates"] = _timed("candidates", lambda: candidates_section(
            embeddings, args.history, args.index, config, whole))
        charts["candidates"] = pictures.grouped_bars_png(
            evaluation["candidates"]["methods"], [f"hit_rate_at_{k}", f"ndcg_at_{k}", "catalog_coverage",
                                                  "gini_of_exposure", "cold_start_coverage"],
            f"candidates against held-out watches (k={k})")
    evaluation["projector"], charts["map"] = _timed(f"{settings.map_projection} map and projector export",
                                                    lambda: map_and_projector(embeddings, posters, staging, config))
    curves = args.training and storage.join(args.training, TRAINING_CURVES_FILE)
    if curves and storage.exists(curves):
        charts["training_curves"] = storage.read_bytes(curves)
    grids, mix = poster_grids(embeddings, posters, {t: row.title for t, row in catalog.items()}, config)
    return evaluation, charts, grids, mix


def run(argv: list[str] | None = None) -> dict:
    """Runs `posters evaluate` and returns the evaluation (also written to OUT/evaluation.json)."""
    args, config = _parse(sys.argv[1:] if argv is None else argv)
    storage.check_output_location(args.out, {"--embeddings": args.embeddings, "--catalog": args.catalog,
                                             "--model": args.model, "--history": args.history, "--index": args.index,
                                             "--training": args.training, "--previous": args.previous,
                                             "--preprocess": args.preprocess,
                                             "catalog.poster_root": config.catalog.poster_root})
    staging = storage.staging_uri(args.out)
    try:
        evaluation, charts, grids, mix = evaluate(config, args, staging)
        previous = storage.read_json(args.previous) if args.previous and storage.exists(args.previous) else None
        evaluation["gates"] = {"failures": check_gates(evaluation, config.evaluate, previous),
                               "previous": args.previous if previous else None, "enforced": args.fail_on_gates}
        evaluation["out"] = args.out
        for name, png in charts.items():
            storage.write_bytes(storage.join(staging, EVALUATION_PICTURES_DIR, f"{name}.png"), png)
        storage.write_json(storage.join(staging, EVALUATION_FILE), evaluation)
        page = report_html(evaluation, charts, grids, mix)
        storage.write_bytes(storage.join(staging, EVALUATION_REPORT_FILE), page.encode("utf-8"))
        storage.publish_directory(staging, args.out, {"model_version": evaluation["model_version"]})
    except BaseException:
        storage.delete_tree(staging)
        raise
    return evaluation


def summary_text(evaluation: dict) -> str:
    k = evaluation["k"]
    sample = evaluation["retrieval_sample"]
    lines = [f"evaluate: model {evaluation['model_version']}, {sample['titles']} titles ({sample['split']} split)",
             f"  retrieval            precision@{k}  recall@{k}  ndcg@{k}  mAP@R"]
    for name, values in evaluation["retrieval"].items():
        lines.append(f"  {name:<20} {values[f'precision_at_{k}']:>12.3f} {values.get(f'recall_at_{k}', 0):>9.3f} "
                     f"{values.get(f'ndcg_at_{k}', 0):>7.3f} {values.get('map_at_r', 0):>6.3f}")
    for name, values in (evaluation.get("near_duplicates") or {}).items():
        if isinstance(values, dict):
            lines.append(f"  near-duplicates {name:<17} recall@1 {values['recall_at_1']:.3f}  "
                         f"recall@10 {values['recall_at_10']:.3f}")
    for name, values in ((evaluation.get("candidates") or {}).get("methods") or {}).items():
        lines.append(f"  candidates {name:<13} hit rate@{k} {values[f'hit_rate_at_{k}']:.3f}  "
                     f"ndcg@{k} {values[f'ndcg_at_{k}']:.3f}  coverage {values['catalog_coverage']:.3f}  "
                     f"gini {values['gini_of_exposure']:.3f}  cold start {values['cold_start_coverage']:.3f}")
    failures = evaluation["gates"]["failures"]
    lines.append("gates: " + ("all passed" if not failures else "FAILED\n  " + "\n  ".join(failures)))
    lines.append(f"report: {storage.join(evaluation['out'], EVALUATION_REPORT_FILE)}")
    return "\n".join(lines)


def _parse(argv: list[str]):
    parser = command_parser("evaluate", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--embeddings", required=True, help="the embed stage's output (local or gs://)")
    parser.add_argument("--catalog", required=True, help="catalog manifest: posters, titles")
    parser.add_argument("--out", required=True, help="output directory (replaced whole when done)")
    parser.add_argument("--preprocess", help="`posters preprocess` output: its duplicate-poster groups decide the "
                                             "eval split (default: split by title_id alone)")
    parser.add_argument("--model", help="the exported model the embeddings came from (near-duplicates)")
    parser.add_argument("--history", help="watch history (candidates against held-out watches)")
    parser.add_argument("--index", help="published index to search for the candidates (default: exact search)")
    parser.add_argument("--training", help="`posters train` output: its eval metrics and training curves")
    parser.add_argument("--previous", help="a previous evaluation.json: the gates compare against it")
    parser.add_argument("--fail-on-gates", action="store_true", help="exit 1 when a gate fails")
    args, config, extra = parse_command(parser, argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, config


def main(argv: list[str]) -> int:
    """Exit codes: 0 done (gates passed, or not enforced), 1 inputs to fix or a failed gate with --fail-on-gates."""
    from pipelines.common.catalog import CatalogError
    from pipelines.common.exported_model import ExportError
    from pipelines.index.loader import IndexLoadError

    try:
        evaluation = run(argv)
    except (EmbeddingsError, CatalogError, ExportError, IndexLoadError, ValueError, FileNotFoundError) as err:
        print(f"posters evaluate: {err}", file=sys.stderr)
        return 1
    print(summary_text(evaluation), flush=True)
    return 1 if evaluation["gates"]["failures"] and evaluation["gates"]["enforced"] else 0
