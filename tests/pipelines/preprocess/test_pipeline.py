"""The preprocess pipeline: every row accounted for, rejects with reasons, the stable split, the genre vocabulary,
staging → publish, the error budget, and the same run in multi_processing mode and on gs:// URIs."""
import csv
import functools
import glob
import hashlib
import json
import os
from collections import Counter

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from pipelines.common import storage
from pipelines.common.catalog import CatalogRow
from pipelines.common.catalog_rows import ValidateCatalogRows, resolve_duplicates
from pipelines.common.splits import EVAL, TRAIN, is_eval, read_duplicate_groups, split_of
from pipelines.config import Config, PreprocessConfig
from pipelines.contracts import (
    DUPLICATE_GROUPS_DIR,
    FEATURE_IMAGE,
    FEATURE_LABELS,
    FEATURE_PRIMARY_GENRE,
    FEATURE_TITLE_ID,
    GENRE_VOCABULARY_NAME,
    PREPROCESS_EVAL_PREFIX,
    PREPROCESS_TRAIN_PREFIX,
    REJECTS_DIR,
    STATS_FILE,
    SUCCESS_FILE,
    RejectReason,
)
from pipelines.preprocess import pipeline as preprocess
from pipelines.preprocess.transform import make_preprocessing_fn, raw_feature_spec
from pipelines.synthetic.catalog import ACCEPTED, BAD_KINDS, generate_catalog
from tests.pipelines.preprocess.pid_recording import raw_example_recording_pid

INPUT_SIZE = 32
N = 4 * len(BAD_KINDS)  # with bad_fraction 0.5: every bad kind twice (both huge_header variants), and as many good rows
# Rows appended to the generated manifest, each testing one catalog-level rule; {good} is a good poster's file.
EXTRA_ROWS = [
    ("twice", "Twice", "Drama", "{good}"),
    ("twice", "Twice again", "Comedy", "{good}"),
    ("", "No id", "Drama", "{good}"),
    ("nogenres", "No genres", "", "{good}"),
    ("noposter", "No poster", "Drama", ""),
    ("copy", "Same poster as another title", "Drama|Horror", "{good}"),
]
# Genre spellings (was: extra vocabulary classes, and `Drama\nComedy` no label), each a title with the good poster,
# and the genres each must end up with: one class per genre. The manifest spells Drama and Comedy before them.
GENRE_VARIANTS = [("Drama|Comedy", ["Drama", "Comedy"]), ("drama", ["Drama"]), ("Ｄｒａｍａ", ["Drama"]),
                  ("Dra\u200bma", ["Drama"]), ("Sci\u2011Fi", ["Sci-Fi"]), ("Drama ; Comedy", ["Drama", "Comedy"]),
                  ("Drama\tComedy", ["Drama", "Comedy"]), ("Drama\nComedy", ["Drama", "Comedy"])]
# After the variants: a PNG with a wrong IDAT CRC (was: TFT's transform died), a line with an unbalanced quote (was:
# the rows after it vanished: "after" must be read) and a poster uri climbing out to /etc/passwd (was: read, its
# bytes copied into rejects/). Each is one reject with its reason, every other row is read.
SPECIAL_REJECTS = {"crc": RejectReason.UNDECODABLE_IMAGE, "passwd": RejectReason.POSTER_OUTSIDE_ROOTS}
QUOTE_LINE = 1 + N + len(EXTRA_ROWS) + (len(GENRE_VARIANTS) + 1) + 1 + 1  # header, generated, extra, variants
# (one spans 2 lines), crc


def with_bad_idat_crc(png: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    crc_at = at + 8 + int.from_bytes(png[at:at + 4], "big")
    return png[:crc_at] + bytes([png[crc_at] ^ 0x01]) + png[crc_at + 1:]


def catalog_with_extra_rows(directory) -> tuple[str, list[dict], dict]:
    """The generated catalog, then EXTRA_ROWS, GENRE_VARIANTS and the special rows. Returns the manifest, the
    generator's bad rows and, for every row that can be accepted, its genres (as the manifest means them) and
    poster_uri (the manifest itself no longer parses with `csv`: the unbalanced quote runs to its end)."""
    generate_catalog(directory, n=N, seed=11, bad_fraction=0.5, width=64, height=96, duplicate_fraction=0.25)
    bad_rows = json.loads((directory / "bad_rows.json").read_text())
    bad_ids = {row["title_id"] for row in bad_rows}
    manifest = directory / "catalog.csv"
    with manifest.open(newline="") as handle:
        generated = list(csv.DictReader(handle))
    good = next(row["poster_uri"] for row in generated if row["title_id"] not in bad_ids)
    listed = {row["title_id"]: {"genres": row["genres"].split("|"), "poster_uri": row["poster_uri"]}
              for row in generated}
    listed.update({tid: {"genres": genres.split("|"), "poster_uri": uri.format(good=good)}
                   for tid, _, genres, uri in EXTRA_ROWS if tid not in ("twice", "")})
    listed.update({f"variant{i}": {"genres": genres, "poster_uri": good}
                   for i, (_, genres) in enumerate(GENRE_VARIANTS)})
    listed["after"] = {"genres": ["Drama"], "poster_uri": good}
    png = tf.io.encode_png(tf.fill([96, 64, 3], tf.constant(120, tf.uint8))).numpy()
    (directory / "posters" / "crc.png").write_bytes(with_bad_idat_crc(png))
    with manifest.open("a", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerows((tid, title, genres, uri.format(good=good)) for tid, title, genres, uri in EXTRA_ROWS)
        writer.writerows((f"variant{i}", "Variant", cell, good) for i, (cell, _) in enumerate(GENRE_VARIANTS))
        writer.writerow(("crc", "CRC", "Drama", "posters/crc.png"))
        handle.write(f'quote,"Unbalanced,Drama,{good}\nafter,After the quote,Drama,{good}\n')
        writer.writerow(("passwd", "Passwd", "Drama", "../" * 40 + "etc/passwd"))
    return str(manifest), bad_rows, listed


def preprocess_args(catalog: str, out: str, *extra: str) -> list[str]:
    return ["--config", "configs/local.yaml", "--catalog", catalog, "--out", out,
            "--set", f"model.input_size={INPUT_SIZE}", "--set", "preprocess.max_reject_fraction=0.5", *extra]


def read_examples(out_dir: str, prefix: str) -> list[dict]:
    spec = tft.TFTransformOutput(out_dir).transformed_feature_spec()
    files = sorted(glob.glob(os.path.join(out_dir, prefix + "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, spec))
    examples = [{name: value.numpy() for name, value in example.items()} for example in dataset]
    return sorted(examples, key=lambda example: example[FEATURE_TITLE_ID])


def read_rejects(out_dir: str) -> list[dict]:
    return pq.read_table(os.path.join(out_dir, REJECTS_DIR)).to_pylist()


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """One DirectRunner run of `posters preprocess` on a generated catalog with bad rows, extra rows, genre
    spellings and the special rows."""
    root = tmp_path_factory.mktemp("preprocess")
    catalog, bad_rows, listed = catalog_with_extra_rows(root / "catalog")
    out = str(root / "out")
    built, build = [], preprocess.build_pipeline
    with pytest.MonkeyPatch.context() as patch:  # keeps the graph the run built (and ran) for a test to visit
        patch.setattr(preprocess, "build_pipeline", lambda pipeline, *args: build(pipeline, *args) or built.append(
            pipeline))
        assert preprocess.main(preprocess_args(catalog, out)) == 0
    stats = json.loads((root / "out" / STATS_FILE).read_text())
    return {"root": root, "catalog": catalog, "bad_rows": bad_rows, "listed": listed, "out": out, "stats": stats,
            "pipeline": built[0],
            "rejects": read_rejects(out), "train": read_examples(out, PREPROCESS_TRAIN_PREFIX),
            "eval": read_examples(out, PREPROCESS_EVAL_PREFIX)}


# --- the full run ---------------------------------------------------------------------------------------------

def test_every_bad_row_the_generator_recorded_is_found_with_its_reason(preprocessed):
    rejected = {r["title_id"]: r["reason"] for r in preprocessed["rejects"]}
    for bad in preprocessed["bad_rows"]:
        assert rejected.get(bad["title_id"], ACCEPTED) == bad["expected"], bad


def test_no_good_row_is_rejected(preprocessed):
    bad_ids = {bad["title_id"] for bad in preprocessed["bad_rows"] if bad["expected"] != ACCEPTED}
    generated_rejects = {r["title_id"] for r in preprocessed["rejects"] if (r["title_id"] or "").startswith("tt")}
    assert generated_rejects == bad_ids


def test_catalog_rules_reject_with_their_reasons(preprocessed):
    extra = Counter((r["title_id"], r["reason"]) for r in preprocessed["rejects"]
                    if not (r["title_id"] or "").startswith("tt"))
    assert extra == Counter({(None, RejectReason.MISSING_TITLE_ID): 1, ("nogenres", RejectReason.NO_GENRES): 1,
                             ("noposter", RejectReason.NO_POSTER): 1, ("twice", RejectReason.DUPLICATE_TITLE_ID): 2,
                             ("crc", RejectReason.UNDECODABLE_IMAGE): 1, (None, RejectReason.MALFORMED_RECORD): 1,
                             ("passwd", RejectReason.POSTER_OUTSIDE_ROOTS): 1})


def test_crc_broken_png_unbalanced_quote_outside_poster_and_genre_spellings(preprocessed):
    """The special rows of the shared catalog: the run published (the fixture), the crc PNG, the unbalanced quote
    and the poster outside the roots are one reject each with its reason (test_catalog_rules_reject_with_their_
    reasons), the quote's reject names its line, no reject holds /etc/passwd's bytes, the row after the quote and
    every genre spelling is an example with a label, and the vocabulary holds one class per genre
    (test_vocabulary_labels_and_primary_genre_follow_the_catalog checks each spelling's labels)."""
    rejects = {r["reason"]: r for r in preprocessed["rejects"] if not (r["title_id"] or "").startswith("tt")}
    assert all(rejects[reason]["title_id"] == title_id for title_id, reason in SPECIAL_REJECTS.items())
    assert f"line {QUOTE_LINE} " in rejects[RejectReason.MALFORMED_RECORD]["detail"]
    assert not any("root:" in r["detail"] for r in preprocessed["rejects"])
    examples = preprocessed["train"] + preprocessed["eval"]
    accepted = {e[FEATURE_TITLE_ID].decode() for e in examples}
    assert {"after", *(f"variant{i}" for i in range(len(GENRE_VARIANTS)))} <= accepted
    assert all(e[FEATURE_LABELS].sum() >= 1 for e in examples)
    lines = preprocessed["stats"]["lines"]
    assert lines["accepted"] == preprocessed["stats"]["accepted"] + 1  # the `Drama\\nComedy` cell spans two lines
    vocabulary = {g.decode() for g in tft.TFTransformOutput(preprocessed["out"]).vocabulary_by_name(
        GENRE_VOCABULARY_NAME)}
    assert {"Drama", "Comedy", "Sci-Fi"} <= vocabulary
    assert not vocabulary & {"drama", "Ｄｒａｍａ", "Dra\u200bma", "Sci\u2011Fi", "Drama ; Comedy"}


def test_every_row_is_accounted_for(preprocessed):
    stats, examples = preprocessed["stats"], preprocessed["train"] + preprocessed["eval"]
    assert stats["read"] == N + len(EXTRA_ROWS) + len(GENRE_VARIANTS) + 4  # crc, quote, after, passwd
    assert stats["accepted"] + stats["rejected"] == stats["read"]
    assert stats["rejected"] == len(preprocessed["rejects"]) == sum(stats["rejected_by_reason"].values())
    assert stats["accepted"] == len(examples) == stats["train_examples"] + stats["eval_examples"]
    assert Counter(r["reason"] for r in preprocessed["rejects"]) == stats["rejected_by_reason"]
    # the `Drama\\nComedy` cell spans two lines
    assert stats["lines"] == {"total": stats["read"] + 2, "header": 1, "blank": 0,
                              "accepted": stats["accepted"] + 1, "rejected": stats["rejected"]}


def test_the_split_is_a_stable_hash_of_each_titles_group(preprocessed):
    groups = read_duplicate_groups(preprocessed["out"])
    train_ids = {e[FEATURE_TITLE_ID].decode() for e in preprocessed["train"]}
    eval_ids = {e[FEATURE_TITLE_ID].decode() for e in preprocessed["eval"]}
    assert eval_ids and train_ids and not train_ids & eval_ids
    assert all(is_eval(groups.get(title_id, title_id), 0.2) for title_id in eval_ids)
    assert not any(is_eval(groups.get(title_id, title_id), 0.2) for title_id in train_ids)


def test_titles_with_identical_or_near_identical_posters_are_one_group_on_one_side(preprocessed):
    """The generator's copies (byte-identical and re-encoded) and the "copy" row: each is in its original's
    group, no group has titles on both sides, and by title_id alone some pair would have been split."""
    groups = read_duplicate_groups(preprocessed["out"])
    copies = json.loads((preprocessed["root"] / "catalog" / "duplicates.json").read_text())
    assert {copy["kind"] for copy in copies} == {"identical", "reencoded"}
    good_title = _good_poster_title(preprocessed)  # "copy", the genre variants and "after" share its poster file
    pairs = [(copy["title_id"], copy["copy_of"]) for copy in copies] + [
        (title_id, good_title) for title_id in ("copy", "after", *(f"variant{i}" for i in range(len(GENRE_VARIANTS))))]
    assert all(groups[a] == groups[b] for a, b in pairs)
    assert any(is_eval(a, 0.2) != is_eval(b, 0.2) for a, b in pairs)  # what the split by title_id did
    side = {e[FEATURE_TITLE_ID].decode(): TRAIN for e in preprocessed["train"]}
    side.update({e[FEATURE_TITLE_ID].decode(): EVAL for e in preprocessed["eval"]})
    sides_of_group = {}
    for title, group in groups.items():
        sides_of_group.setdefault(group, set()).add(side[title])
    assert all(len(sides) == 1 for sides in sides_of_group.values())
    rows = pq.read_table(os.path.join(preprocessed["out"], DUPLICATE_GROUPS_DIR)).to_pylist()
    assert all(row["split"] == side[row["title_id"]] == split_of(row["title_id"], 0.2, groups) for row in rows)
    assert all(row["group_id"] == min(t for t, g in groups.items() if g == row["group_id"]) for row in rows)
    stats = preprocessed["stats"]
    assert stats["titles_in_duplicate_groups"] == len(groups) == len(rows)
    assert stats["duplicate_groups"] == len(sides_of_group) and stats["unsettled_duplicate_links"] == 0
    assert len(groups) == len({t for pair in pairs for t in pair})  # no distinct poster joined a group


def _good_poster_title(preprocessed) -> str:
    """The generated title whose poster file the "copy" row names."""
    listed = preprocessed["listed"]
    uri = listed["copy"]["poster_uri"]
    return next(title_id for title_id, row in listed.items() if row["poster_uri"] == uri and title_id.startswith("tt"))


def test_vocabulary_labels_and_primary_genre_follow_the_catalog(preprocessed):
    genres = {title_id: row["genres"] for title_id, row in preprocessed["listed"].items()}
    examples = preprocessed["train"] + preprocessed["eval"]
    counts = Counter(g for e in examples for g in genres[e[FEATURE_TITLE_ID].decode()])
    vocabulary = tft.TFTransformOutput(preprocessed["out"]).vocabulary_by_name(GENRE_VOCABULARY_NAME)
    vocabulary = [genre.decode() for genre in vocabulary]
    assert sorted(vocabulary) == sorted(counts) and preprocessed["stats"]["genre_counts"] == dict(counts)
    assert [counts[g] for g in vocabulary] == sorted(counts.values(), reverse=True)  # most frequent first
    for example in examples:
        listed = genres[example[FEATURE_TITLE_ID].decode()]
        assert [vocabulary[i] for i in np.flatnonzero(example[FEATURE_LABELS])] == sorted(
            listed, key=vocabulary.index)
        assert vocabulary[example[FEATURE_PRIMARY_GENRE]] == listed[0]


def test_images_are_pngs_at_the_model_input_size(preprocessed):
    image = tf.io.decode_png(preprocessed["train"][0][FEATURE_IMAGE])
    assert image.shape == (INPUT_SIZE, INPUT_SIZE, 3) and image.dtype == tf.uint8


def test_tft_sees_genres_only_and_the_posters_are_resized_beside_it_by_the_serving_function(preprocessed):
    """The TFT steps take title_id and genres, never a poster (a tfx-bsl batch of large posters can pass Arrow's
    2 GB limit); the images are `poster_pixels` PNGs made outside TFT, and the output's feature spec still
    declares them for the trainer. The graph visited is the one the shared run built and ran."""
    assert set(raw_feature_spec()) == {FEATURE_TITLE_ID, "genres"}
    pipeline = preprocessed["pipeline"]
    producers = {}

    class Inputs(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            for pcoll in node.outputs.values():
                producers[id(pcoll)] = node.full_label
            if node.full_label.startswith(("AnalyzeGenres", "ApplyGenreVocabulary")):
                inputs.update(producers.get(id(p), "") for p in node.inputs)

    inputs = set()
    pipeline.visit(Inputs())
    assert "ToRawExamples" in inputs and not any(label.startswith("ReadAndValidatePosters") for label in inputs)
    row, poster = CatalogRow("t1", "T", ("Drama",), "p.png", 1), type("P", (), {"image_bytes": b"x" * 10})()
    assert set(preprocess._raw_example(row, poster)) == {FEATURE_TITLE_ID, "genres"}
    spec = tft.TFTransformOutput(preprocessed["out"]).transformed_feature_spec()
    assert set(spec) == {FEATURE_TITLE_ID, FEATURE_IMAGE, FEATURE_LABELS, FEATURE_PRIMARY_GENRE}


def test_conversions_and_duplicate_images_are_counted(preprocessed):
    stats = preprocessed["stats"]
    assert stats["converted_to_rgb"] == {"L": 2, "CMYK": 2, "RGBA": 2, "P": 2}
    # "copy" shares its poster file with a good generated title; the generator's identical copies share bytes
    accepted = {e[FEATURE_TITLE_ID].decode() for e in preprocessed["train"] + preprocessed["eval"]}
    uris = {title_id: row["poster_uri"] for title_id, row in preprocessed["listed"].items()}
    digests = Counter(hashlib.sha256((preprocessed["root"] / "catalog" / uris[t]).read_bytes()).digest()
                      for t in accepted)
    assert stats["duplicate_images"] == sum(n - 1 for n in digests.values()) > 1
    assert stats["duplicate_titles_kept_last"] == 0


def test_outputs_are_published_whole_and_staging_is_gone(preprocessed):
    out = preprocessed["out"]
    assert os.path.exists(os.path.join(out, SUCCESS_FILE))
    assert sorted(os.listdir(out)) == sorted([SUCCESS_FILE, STATS_FILE, REJECTS_DIR, "train", "eval",
                                              "transform_fn", "transformed_metadata", DUPLICATE_GROUPS_DIR])
    assert not [name for name in os.listdir(preprocessed["root"]) if name.startswith(".staging")]


def test_multi_processing_mode_gives_the_same_outputs(preprocessed, monkeypatch):
    """Two worker processes: any state that would not survive Dataflow's serialisation breaks this run. The
    transform step records the process it runs in, to show the work left the test process."""
    pid_dir = preprocessed["root"] / "multi_pids"
    pid_dir.mkdir()
    monkeypatch.setattr(preprocess, "_raw_example",
                        functools.partial(raw_example_recording_pid, str(pid_dir), preprocess._raw_example))
    out = str(preprocessed["root"] / "out_multi")
    args = preprocess_args(preprocessed["catalog"], out,
                           "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert preprocess.main(args) == 0
    worker_pids = {int(name) for name in os.listdir(pid_dir)}
    assert worker_pids and os.getpid() not in worker_pids
    stats = json.loads(open(os.path.join(out, STATS_FILE)).read())
    ignore = {"seconds", "out"}
    assert {k: v for k, v in stats.items() if k not in ignore} == {
        k: v for k, v in preprocessed["stats"].items() if k not in ignore}
    for prefix, split in ((PREPROCESS_TRAIN_PREFIX, "train"), (PREPROCESS_EVAL_PREFIX, "eval")):
        ours = read_examples(out, prefix)
        assert [e[FEATURE_TITLE_ID] for e in ours] == [e[FEATURE_TITLE_ID] for e in preprocessed[split]]
        assert all(a[FEATURE_IMAGE] == b[FEATURE_IMAGE] for a, b in zip(ours, preprocessed[split]))


# --- error budget, gs:// ------------------------------------------------------------------------------------

def test_over_the_error_budget_nothing_is_published(tmp_path, capsys):
    generate_catalog(tmp_path / "catalog", n=4, seed=1, bad_fraction=0.5, width=64, height=96)
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("the last good run")
    code = preprocess.main(preprocess_args(str(tmp_path / "catalog" / "catalog.csv"), str(out),
                                           "--set", "preprocess.max_reject_fraction=0.25"))
    assert code == 1
    message = capsys.readouterr().err
    assert "2 of 4 rows rejected (50.0%)" in message and "zero_bytes 1" in message and "truncated_image 1" in message
    assert os.listdir(out) == ["previous.txt"]
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".staging-out")]
    assert len(staging) == 1 and str(staging[0]) in message  # kept, so the rejects can be read
    assert len(read_rejects(str(staging[0]))) == 2


def test_runs_on_gcs_uris(gcs_emulator, tmp_path):
    generate_catalog(tmp_path / "catalog", n=6, seed=2, width=64, height=96)
    bucket = gcs_emulator.client.bucket(gcs_emulator.bucket)
    for path in (tmp_path / "catalog").rglob("*"):
        if path.is_file():
            bucket.blob(f"catalog/{path.relative_to(tmp_path / 'catalog')}").upload_from_filename(str(path))
    out = gcs_emulator.uri("preprocessed")
    assert preprocess.main(preprocess_args(gcs_emulator.uri("catalog/catalog.csv"), out)) == 0
    stats = storage.read_json(storage.join(out, STATS_FILE))
    assert (stats["read"], stats["accepted"], stats["rejected"]) == (6, 6, 0)
    files = storage.list_files(out)
    assert storage.join(out, SUCCESS_FILE) in files
    assert any(f.startswith(storage.join(out, "transform_fn/saved_model.pb")) for f in files)
    assert [f for f in files if "/train/part" in f] and [f for f in files if f"/{REJECTS_DIR}/part" in f]
    assert not [f for f in storage.list_files(gcs_emulator.uri()) if "/.staging-" in f]


@pytest.mark.parametrize("setting", ["preprocess.vocab_top_k=0", "preprocess.read_retries=-1",
                                     "preprocess.vocab_frequency_threshold=0"])
def test_a_bad_preprocess_setting_names_its_key(tmp_path, capsys, setting):
    assert preprocess.main(preprocess_args(str(tmp_path / "c.csv"), str(tmp_path / "out"), "--set", setting)) == 1
    assert setting.split("=")[0] in capsys.readouterr().err


def test_a_missing_catalog_is_a_clear_error(tmp_path, capsys):
    assert preprocess.main(preprocess_args(str(tmp_path / "nothing.csv"), str(tmp_path / "out"))) == 1
    assert "catalog manifest not found" in capsys.readouterr().err


def test_an_out_that_holds_the_catalog_or_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    generate_catalog(tmp_path / "catalog", n=4, seed=1, width=64, height=96)
    catalog = tmp_path / "catalog" / "catalog.csv"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert preprocess.main(preprocess_args(str(catalog), str(tmp_path / "catalog"))) == 1
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'catalog'} contains the input --catalog {catalog}" in err
    assert len(err.strip().splitlines()) == 1
    assert preprocess.main(preprocess_args(str(catalog), str(catalog))) == 1
    assert "is an existing file" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- the parts ------------------------------------------------------------------------------------------------

def row(title_id, number, genres=("Drama",), poster="p.jpg") -> CatalogRow:
    return CatalogRow(title_id, "", tuple(genres), poster, number)


def test_reject_policy_rejects_every_row_of_a_duplicated_title_id():
    kept, rejected = resolve_duplicates([row("a", 7), row("a", 2)], "reject")
    assert kept is None and [(r.row_number, "rows 2, 7" in detail) for r, detail in rejected] == [(2, True), (7, True)]


def test_keep_last_policy_keeps_the_row_furthest_down():
    kept, rejected = resolve_duplicates([row("a", 9), row("a", 2), row("a", 5)], "keep_last")
    assert kept.row_number == 9 and [r.row_number for r, _ in rejected] == [2, 5]
    assert all("superseded by row 9" in detail for _, detail in rejected)


@pytest.mark.parametrize("policy, kept_ids", [("reject", ["b"]), ("keep_last", ["a", "b"])])
def test_validate_catalog_rows(policy, kept_ids):
    rows = [row("a", 1), row("a", 2), row("b", 3), row(None, 4), row("c", 5, genres=())]
    pipeline = BeamTestPipeline()
    valid, rejects = pipeline | beam.Create(rows) | ValidateCatalogRows(policy)
    assert_that(valid | "Ids" >> beam.Map(lambda r: r.title_id), equal_to(kept_ids), label="Valid")
    duplicates = [("a", RejectReason.DUPLICATE_TITLE_ID)] * (2 if policy == "reject" else 1)
    assert_that(rejects | "Reasons" >> beam.Map(lambda r: (r["title_id"], r["reason"])),
                equal_to(duplicates + [(None, RejectReason.MISSING_TITLE_ID), ("c", RejectReason.NO_GENRES)]),
                label="Rejects")
    pipeline.run().wait_until_finish()


def test_is_eval_is_pinned_and_near_the_fraction():
    """Pinned: changing the hash would move titles between train and eval from one run to the next."""
    ids = [f"tt{i:07d}" for i in range(1, 2001)]
    assert [i for i in ids[:30] if is_eval(i, 0.2)] == ["tt0000014", "tt0000017", "tt0000022", "tt0000025",
                                                        "tt0000030"]
    assert 0.17 < sum(is_eval(i, 0.2) for i in ids) / len(ids) < 0.23
    assert not any(is_eval(i, 0.0) for i in ids) and all(is_eval(i, 1.0) for i in ids)


# Five titles: Drama is listed 3 times, Comedy 2, Horror and Western once each. "b" lists Horror before Comedy;
# "d" lists only Western.
VOCABULARY_TITLES = {"a": ["Drama", "Comedy"], "b": ["Horror", "Comedy"], "c": ["Drama"], "d": ["Western"],
                     "e": ["Drama"]}


@pytest.mark.parametrize("settings, vocabulary, expected", [
    # Genres seen twice or more, most frequent first: Drama, Comedy. b's primary genre is Comedy (Horror is out);
    # d has no labels and primary_genre -1.
    ({"vocab_frequency_threshold": 2}, [b"Drama", b"Comedy"],
     [("a", [1.0, 1.0], 0), ("b", [0.0, 1.0], 1), ("c", [1.0, 0.0], 0), ("d", [0.0, 0.0], -1), ("e", [1.0, 0.0], 0)]),
    # The single most frequent genre: Drama. b and d have none of it, so no labels and primary_genre -1.
    ({"vocab_top_k": 1}, [b"Drama"],
     [("a", [1.0], 0), ("b", [0.0], -1), ("c", [1.0], 0), ("d", [0.0], -1), ("e", [1.0], 0)]),
], ids=["frequency_threshold", "top_k"])
def test_preprocessing_fn_vocabulary_labels_and_primary_genre(tmp_path, settings, vocabulary, expected):
    config = Config(preprocess=PreprocessConfig(**settings))
    instances = [{"title_id": tid, "genres": listed} for tid, listed in VOCABULARY_TITLES.items()]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    with BeamTestPipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path)):
        (transformed, _), transform_fn = ((pipeline | beam.Create(instances), metadata)
                                          | tft_beam.AnalyzeAndTransformDataset(make_preprocessing_fn(config)))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
        summary = transformed | beam.Map(lambda e: (e[FEATURE_TITLE_ID].decode(), list(e[FEATURE_LABELS]),
                                                   int(e[FEATURE_PRIMARY_GENRE]), sorted(e)))
        features = sorted([FEATURE_TITLE_ID, FEATURE_LABELS, FEATURE_PRIMARY_GENRE])  # TFT never sees a poster
        assert_that(summary, equal_to([(tid, labels, primary, features) for tid, labels, primary in expected]))
    output = tft.TFTransformOutput(str(tmp_path / "out"))
    assert output.vocabulary_by_name(GENRE_VOCABULARY_NAME) == vocabulary
    assert output.transformed_feature_spec()[FEATURE_LABELS].shape == [len(vocabulary)]
