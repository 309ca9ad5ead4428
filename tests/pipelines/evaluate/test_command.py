"""`posters evaluate` end to end on a small synthetic catalog: every section, the outputs, the gates' exit code."""
import contextlib
import io
import json

import numpy as np
import pytest

from pipelines.evaluate import command
from tests.pipelines.candidates.candidate_inputs import write_embeddings

FAST = ["--set", "evaluate.map_projection=pca", "--set", "evaluate.near_duplicate_posters=6",
        "--set", "evaluate.map_posters=3", "--set", "evaluate.report_titles=3"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A generated catalog, an untrained tiny model export, its embeddings of every poster, a watch history."""
    from pipelines.common import storage
    from pipelines.common.catalog import read_catalog
    from pipelines.common.exported_model import load_exported_model
    from pipelines.config import CatalogConfig
    from pipelines.synthetic.catalog import generate_catalog
    from pipelines.synthetic.watch_history import generate_watch_history
    from tests.pipelines.embed.tiny_model import export_tiny_model

    root = tmp_path_factory.mktemp("evaluate")
    generate_catalog(root / "catalog", n=100, seed=2, width=64, height=96)
    catalog = str(root / "catalog" / "catalog.csv")
    rows = read_catalog(catalog, CatalogConfig())
    meta = export_tiny_model(str(root / "model"))
    embed, _ = load_exported_model(str(root / "model"))
    vectors = embed([storage.read_bytes(row.poster_uri) for row in rows])
    write_embeddings(str(root / "embeddings"), [row.title_id for row in rows], vectors,
                     model_version=meta["model_version"], genres=[list(row.genres) for row in rows])
    generate_watch_history(catalog, str(root / "history.csv"), n_users=30, seed=1)
    return {"root": root, "catalog": catalog, "model": str(root / "model"), "embeddings": str(root / "embeddings"),
            "history": str(root / "history.csv")}


def _argv(inputs, out, *extra, model=True, history=True):
    return ["--embeddings", inputs["embeddings"], "--catalog", inputs["catalog"], "--out", str(out),
            *(["--model", inputs["model"]] if model else []), *(["--history", inputs["history"]] if history else []),
            *FAST, *extra]


@pytest.fixture(scope="module")
def evaluated(inputs):
    """One `posters evaluate` run of every section, for the tests that read its outputs and figures: its exit
    code, what it printed, and its evaluation.json."""
    out = inputs["root"] / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = command.main(_argv(inputs, out))
    return {"code": code, "out": out, "printed": printed.getvalue(),
            "evaluation": json.loads((out / "evaluation.json").read_text())}


@pytest.fixture(scope="module")
def evaluation(evaluated):
    return evaluated["evaluation"]


def test_evaluate_writes_every_section_the_report_and_the_projector_export(evaluated):
    out, evaluation = evaluated["out"], evaluated["evaluation"]
    assert evaluated["code"] == 0
    assert set(evaluation["retrieval"]) == {"embedding", "random", "colour_histogram", "colour_thumbnail"}
    assert evaluation["retrieval"]["embedding"]["queries"] == evaluation["retrieval_sample"]["titles"] > 10
    near = evaluation["near_duplicates"]
    assert near["embedding"]["copies"] == 6 * 4 and near["database"] == 100
    assert set(near["embedding"]["by_edit"]) == {"reencoded", "rescaled", "cropped", "recompressed"}
    assert set(evaluation["candidates"]["methods"]) == {"content", "most_watched", "random"}
    assert evaluation["candidates"]["searched"] == "exact search"
    assert isinstance(evaluation["gates"]["failures"], list)
    assert (out / "_SUCCESS").exists() and (out / "report.html").stat().st_size > 10_000
    assert {p.name for p in (out / "pictures").iterdir()} == {
        "retrieval_by_genre.png", "distance_histograms.png", "near_duplicates.png", "candidates.png", "map.png"}
    projector = out / "projector"
    assert len((projector / "vectors.tsv").read_text().splitlines()) == 100
    assert len((projector / "metadata.tsv").read_text().splitlines()) == 101  # a header, then one row per vector
    config = json.loads((projector / "projector_config.json").read_text())["embeddings"][0]
    assert config["tensorShape"] == [100, 16] and (projector / config["sprite"]["imagePath"]).exists()
    printed = evaluated["printed"]
    assert "near-duplicates embedding" in printed and str(out / "report.html") in printed


def test_the_same_inputs_give_the_same_evaluation(inputs, evaluation):
    """A second run's evaluation (as `command.run` returns it) equals the first's evaluation.json."""
    first, second = dict(evaluation), command.run(_argv(inputs, inputs["root"] / "b"))
    for each in (first, second):
        each.pop("created"), each.pop("out")
    assert first == second


def test_a_failed_gate_exits_1_with_fail_on_gates(inputs, capsys):
    # without --model: the near-duplicates have no part in the candidates' gate
    argv = _argv(inputs, inputs["root"] / "gated", "--set", "evaluate.min_hit_rate_vs_popularity=1000",
                 "--fail-on-gates", model=False)
    assert command.main(argv) == 1
    assert "gates: FAILED" in capsys.readouterr().out


def test_a_small_catalog_can_be_scored_on_all_its_titles(inputs):
    # without --model and --history: the near-duplicates and the candidates do not depend on the retrieval split
    evaluation = command.run(_argv(inputs, inputs["root"] / "all", "--set", "evaluate.retrieval_split=all",
                                   model=False, history=False))
    assert evaluation["retrieval_sample"]["split"] == "all"
    assert evaluation["retrieval"]["embedding"]["queries"] == evaluation["retrieval_sample"]["titles"] == 100


def test_too_few_eval_titles_is_an_error_that_says_what_to_change(inputs, capsys):
    assert command.main(_argv(inputs, inputs["root"] / "few", "--set", "evaluate.k=60")) == 1
    assert "evaluate.retrieval_split=all" in capsys.readouterr().err


def test_label_matrix_orders_the_genres():
    labels, vocabulary = command.label_matrix([["Drama", "Action"], ["Action"]])
    assert vocabulary == ["Action", "Drama"] and np.array_equal(labels, [[1, 1], [1, 0]])


def test_an_out_that_holds_an_input_is_refused_before_any_work_and_the_input_kept(inputs, capsys):
    before = sorted(p.name for p in (inputs["root"] / "embeddings").iterdir())
    assert command.main(_argv(inputs, inputs["root"] / "embeddings")) == 1
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in (inputs["root"] / "embeddings").iterdir()) == before


def test_an_out_inside_the_preprocess_input_is_refused(inputs, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.contracts import DUPLICATE_GROUPS_DIR, DUPLICATE_GROUPS_SCHEMA

    preprocessed = tmp_path / "preprocessed"
    (preprocessed / DUPLICATE_GROUPS_DIR).mkdir(parents=True)  # a readable preprocess output: only --out is wrong
    pq.write_table(pa.Table.from_pylist([], schema=DUPLICATE_GROUPS_SCHEMA),
                   preprocessed / DUPLICATE_GROUPS_DIR / "part-00000.parquet")
    argv = [*_argv(inputs, preprocessed / "evaluation"), "--preprocess", str(preprocessed)]
    assert command.main(argv) == 1
    error = capsys.readouterr().err
    assert "--out" in error and "--preprocess" in error, error
    assert sorted(p.name for p in preprocessed.iterdir()) == [DUPLICATE_GROUPS_DIR]


def test_the_eval_split_keeps_a_duplicate_poster_group_on_the_side_preprocess_put_it(tmp_path):
    """Two titles that split apart by title_id share a poster: with preprocess' groups both follow the group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.common.splits import is_eval, read_duplicate_groups
    from pipelines.config import load_config
    from pipelines.contracts import DUPLICATE_GROUPS_DIR, DUPLICATE_GROUPS_SCHEMA
    from pipelines.embed.reader import Embeddings

    ids = [f"tt{i:07d}" for i in range(1, 61)]
    shared = [next(t for t in ids if is_eval(t, 0.2)), next(t for t in ids if not is_eval(t, 0.2))]
    group = min(shared)
    (tmp_path / DUPLICATE_GROUPS_DIR).mkdir()
    pq.write_table(pa.Table.from_pylist(
        [{"title_id": t, "group_id": group, "image_sha256": "same", "dhash": "0", "split": "x"} for t in shared],
        schema=DUPLICATE_GROUPS_SCHEMA), tmp_path / DUPLICATE_GROUPS_DIR / "part-00000.parquet")
    groups = read_duplicate_groups(str(tmp_path))
    embeddings = Embeddings(ids, np.zeros((60, 4), np.float32), ids, [["Drama"]] * 60, "m", 4, "angular")
    config = load_config("local.yaml", ["evaluate.k=2"])
    by_title = {ids[r] for r in command.eval_split_rows(embeddings, config)}
    by_group = {ids[r] for r in command.eval_split_rows(embeddings, config, groups)}
    assert shared[0] in by_title and shared[1] not in by_title  # the leak: one poster on both sides
    assert {t in by_group for t in shared} == {is_eval(group, 0.2)}
    assert by_group - set(shared) == by_title - set(shared)
    with pytest.raises(ValueError, match="rerun preprocess"):
        read_duplicate_groups(str(tmp_path / "older"))


def test_a_catalog_within_max_titles_gives_the_figures_of_the_whole_catalog(inputs, evaluation):
    """The sample of a small catalog is all of it: the figures are those of the whole-catalog computation
    (every embedding read at once, the whole history, exact search over every title), as before sampling."""
    from pipelines.candidates.watch_history import WatchEvent, read_watch_history
    from pipelines.common import retrieval_metrics as rm
    from pipelines.common import storage
    from pipelines.common.catalog import read_catalog
    from pipelines.common.splits import is_eval
    from pipelines.embed.reader import read_embeddings
    from pipelines.evaluate import held_out, reference

    _, config = command._parse(_argv(inputs, inputs["root"] / "out"))
    whole = read_embeddings(inputs["embeddings"])
    assert evaluation["sample"]["whole"] and evaluation["sample"]["titles"] == len(whole) == 100
    rows = [r for r, t in enumerate(whole.title_ids) if whole.genres[r] and is_eval(t, config.preprocess.eval_fraction)]
    labels, vocabulary = command.label_matrix([whole.genres[r] for r in rows])
    k = config.evaluate.k
    assert evaluation["retrieval"]["embedding"] == rm.retrieval_metrics(whole.vectors[rows], labels, k, vocabulary)
    uris = {row.title_id: row.poster_uri for row in read_catalog(inputs["catalog"], config.catalog)}
    features = reference.image_features([storage.read_bytes(uris[whole.title_ids[r]]) for r in rows])
    assert evaluation["retrieval"]["colour_thumbnail"] == rm.retrieval_metrics(features["colour_thumbnail"], labels,
                                                                               k, vocabulary)
    events = [e for e in read_watch_history(inputs["history"]) if isinstance(e, WatchEvent)]
    expected = held_out.evaluate_candidates(
        events, dict(zip(whole.title_ids, whole.vectors)), dict(zip(whole.title_ids, whole.genres)),
        held_out.exact_search(whole.title_ids, whole.vectors), k, config.evaluate.holdout_last,
        config.candidates.recency_half_life_days, config.evaluate.seed)
    assert {key: evaluation["candidates"][key] for key in expected} == expected
    assert evaluation["projector"]["points"] == evaluation["near_duplicates"]["database"] == 100
    assert "all 100 catalog titles" in evaluation["near_duplicates"]["note"]


def test_a_catalog_above_max_titles_is_evaluated_on_its_stable_sample(inputs):
    from pipelines.embed.reader import read_embeddings
    from pipelines.evaluate.sample import in_sample

    # without --model: the near-duplicates (the model's load) add nothing to what the sample changes here
    evaluation = command.run(["--embeddings", inputs["embeddings"], "--catalog", inputs["catalog"],
                              "--out", str(inputs["root"] / "sampled"), "--history", inputs["history"], *FAST,
                              "--set", "evaluate.max_titles=50", "--set", "evaluate.retrieval_split=all"])
    sample = evaluation["sample"]
    assert not sample["whole"] and sample["catalog_titles"] == 100 and sample["fraction"] == 0.5
    titles = sample["titles"]
    assert titles == sum(in_sample(t, 0.5) for t in read_embeddings(inputs["embeddings"]).title_ids) > 20
    assert evaluation["retrieval_sample"]["titles"] == titles == evaluation["projector"]["points"]
    assert evaluation["candidates"]["searched"] == f"exact search among the {titles} sampled titles"
