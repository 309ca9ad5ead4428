"""The embed pipeline end to end on DirectRunner: a generated catalog, a real tiny exported model, real Parquet."""
import csv
import io
import json
import os
import shutil
import struct

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.bench import embed as embed_bench
from pipelines.common.accounting import ErrorBudgetExceeded
from pipelines.common.exported_model import takes_pixels
from pipelines.common.posters import POSTER_BYTES_READ, validate_poster
from pipelines.config import load_config
from pipelines.contracts import (
    EMBEDDINGS_MANIFEST_FILE,
    MODEL_META_FILE,
    POSTER_OBJECT_COLUMN,
    REJECTS_DIR,
    STATS_FILE,
    SUCCESS_FILE,
    RejectReason,
    embed_output_schema,
)
from pipelines.embed import pipeline as embed
from pipelines.embed.reader import read_embeddings
from pipelines.synthetic.catalog import BAD_KINDS, generate_catalog
from tests.pipelines.embed.pid_handler import PidRecordingHandlers
from tests.pipelines.embed.tiny_model import call_exported_model, export_jpeg_only_model, export_tiny_model
from tests.pipelines.embeddings_fixture import MODEL_VERSION, unit_vectors, write_embeddings

N = 24


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model"))
    return path, export_tiny_model(path, input_size=32, dim=16, seed=0)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    """N clean posters plus one row of every broken kind (6 of them must be rejected, 5 converted and kept)."""
    out = tmp_path_factory.mktemp("catalog")
    generate_catalog(out, n=N + len(BAD_KINDS), seed=3, bad_fraction=len(BAD_KINDS) / (N + len(BAD_KINDS)),
                     width=64, height=96)
    return out


def embed_args(catalog, model_dir, out, *extra):
    return ["--catalog", str(catalog), "--model", model_dir, "--out", str(out),
            "--set", "embed.min_batch_size=4", "--set", "embed.max_batch_size=8",
            "--set", "embed.max_reject_fraction=0.3", *extra]


def run_embed(*args):
    return embed.run(embed_args(*args), test_pipeline=BeamTestPipeline())


def read_rows(out) -> dict:
    table = read_embeddings(str(out))
    return {tid: (vec, sha, genres) for tid, vec, sha, genres in
            zip(table.title_ids, table.vectors, table.image_sha256, table.genres)}


def manifest_rows(catalog_csv):
    with open(catalog_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def write_manifest_rows(catalog_csv, rows):
    with open(catalog_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def expected_vectors(catalog_dir, model_dir, title_ids):
    """What the exported model gives, called directly on the validated bytes of each title's poster."""
    config = load_config("configs/local.yaml").image
    uris = {row["title_id"]: catalog_dir / row["poster_uri"] for row in manifest_rows(catalog_dir / "catalog.csv")}
    images = [validate_poster(uris[tid].read_bytes(), config).image_bytes for tid in title_ids]
    return call_exported_model(model_dir, images)


@pytest.fixture(scope="module")
def first_run(model, catalog_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "embeddings"
    stats = run_embed(catalog_dir / "catalog.csv", model[0], out, "--set", "embed.max_rows_per_file=7")
    return out, stats


def test_output_has_contract_schema_metadata_and_a_manifest(first_run, model):
    out, stats = first_run
    meta = model[1]
    manifest = json.loads((out / EMBEDDINGS_MANIFEST_FILE).read_text())
    assert (out / SUCCESS_FILE).exists()
    assert manifest["rows"] == stats["rows"] == N + 5
    assert (manifest["dim"], manifest["model_version"], manifest["metric"]) == (16, meta["model_version"], "angular")
    assert manifest["counts"]["new"] == N + 5 and manifest["counts"]["rejected"] == 6
    for name in manifest["files"]:
        parquet = pq.ParquetFile(out / name)
        assert parquet.schema_arrow.equals(embed_output_schema(16, meta["model_version"]), check_metadata=True)
        assert parquet.metadata.num_rows <= 7
        ids = parquet.read().column("title_id").to_pylist()
        assert ids == sorted(ids)


def test_the_output_folder_opens_with_pyarrow_dataset_and_duckdb(first_run):
    """`_rejects/`, `_manifest.json`, `_stats.json` and `_SUCCESS` sit beside the Parquet parts; standard readers
    skip them and see exactly the rows the project's own reader sees."""
    import duckdb
    import pyarrow.dataset as ds

    out, _ = first_run
    assert {REJECTS_DIR, EMBEDDINGS_MANIFEST_FILE, STATS_FILE, SUCCESS_FILE} <= set(os.listdir(out))
    assert all(name.startswith("_") or name.endswith(".parquet") for name in os.listdir(out))
    expected = sorted(read_embeddings(str(out)).title_ids)
    assert sorted(ds.dataset(str(out), format="parquet").to_table().column("title_id").to_pylist()) == expected
    table = pq.read_table(out)
    assert sorted(table.column("title_id").to_pylist()) == expected and table.schema.field("embedding").type.list_size
    found = duckdb.sql(f"SELECT title_id, len(embedding) FROM read_parquet('{out}/*.parquet') ORDER BY title_id")
    assert found.fetchall() == [(title, 16) for title in expected]


def test_vectors_are_unit_norm_and_equal_the_exported_model(first_run, model, catalog_dir):
    rows = read_rows(first_run[0])
    title_ids = sorted(rows)
    vectors = np.stack([rows[tid][0] for tid in title_ids])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, expected_vectors(catalog_dir, model[0], title_ids), atol=1e-5)


def test_every_catalog_row_is_an_embedding_or_a_reject_with_its_reason(first_run, catalog_dir):
    out, stats = first_run
    bad = {row["title_id"]: row["expected"] for row in json.loads((catalog_dir / "bad_rows.json").read_text())}
    rejects = pq.read_table(out / REJECTS_DIR).to_pylist()
    assert {r["title_id"]: r["reason"] for r in rejects} == {t: e for t, e in bad.items() if e != "accepted"}
    assert all(r["detail"] and r["uri"] for r in rejects)
    all_ids = {row["title_id"] for row in manifest_rows(catalog_dir / "catalog.csv")}
    assert set(read_rows(out)) == all_ids - {r["title_id"] for r in rejects}
    assert stats["read"] == len(all_ids) and stats["rejected_by_reason"] == {
        reason: 1 for reason in (RejectReason.NOT_AN_IMAGE, RejectReason.TOO_MANY_PIXELS, RejectReason.TOO_SMALL,
                                 RejectReason.TRUNCATED_IMAGE, RejectReason.NO_POSTER, RejectReason.ZERO_BYTES)}
    assert stats["lines"] == {"total": len(all_ids) + 1, "header": 1, "blank": 0, "accepted": len(all_ids) - 6,
                              "rejected": 6}


def _tree(directory) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_an_out_that_holds_the_catalog_is_refused_before_any_work_and_the_catalog_is_kept(model, catalog_dir,
                                                                                          tmp_path, capsys):
    """`embed --out DIR` where DIR holds the catalog used to exit 0 after deleting the catalog and its posters."""
    catalog = tmp_path / "catalog"
    shutil.copytree(catalog_dir, catalog)
    before = _tree(catalog)
    assert embed.main(embed_args(catalog / "catalog.csv", model[0], catalog)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posters embed: --out {catalog} contains the input --catalog {catalog / 'catalog.csv'}")
    assert "\n" not in err
    assert _tree(catalog) == before and sorted(os.listdir(tmp_path)) == ["catalog"]  # no staging directory either


def test_an_out_that_is_an_existing_file_or_inside_the_model_is_refused(model, catalog_dir, tmp_path, capsys):
    """An existing file used to be renamed to `*.old-xxxx` and a directory put in its place, exit 0."""
    out = tmp_path / "embeddings.parquet"
    out.write_bytes(b"somebody's file")
    assert embed.main(embed_args(catalog_dir / "catalog.csv", model[0], out)) == 1
    assert f"--out {out} is an existing file" in capsys.readouterr().err
    assert out.read_bytes() == b"somebody's file" and sorted(os.listdir(tmp_path)) == ["embeddings.parquet"]
    inside_model = os.path.join(model[0], "embeddings")
    assert embed.main(embed_args(catalog_dir / "catalog.csv", model[0], inside_model)) == 1
    assert "lies inside the input --model" in capsys.readouterr().err
    assert not os.path.exists(inside_model)


def test_rows_superseded_under_keep_last_do_not_count_against_the_error_budget(first_run, model, catalog_dir,
                                                                                tmp_path):
    """Four titles listed twice: half the rows are rejected as duplicates, over the 30 % budget, yet under
    keep_last they are superseded, not errors, and the run publishes one embedding per title. Under the default
    policy (reject) the same four titles listed twice in the whole catalog are 8 errors: with its 6 bad posters,
    too many rejects (14 of 39, over 30 %) fail the run naming the top reasons, most first, and nothing is
    published."""
    catalog = tmp_path / "catalog"
    shutil.copytree(catalog_dir, catalog)
    rows = manifest_rows(catalog / "catalog.csv")
    good = [row for row in rows if row["title_id"] in read_rows(first_run[0])][:4]
    write_manifest_rows(catalog / "twice.csv", good + good)
    stats = run_embed(catalog / "twice.csv", model[0], tmp_path / "kept", "--set",
                      "preprocess.duplicate_title_policy=keep_last")
    assert (stats["read"], stats["rejected"], stats["duplicate_titles_kept_last"], stats["rows"]) == (8, 4, 4, 4)
    write_manifest_rows(catalog / "catalog.csv", rows + good)
    refused = tmp_path / "refused"
    with pytest.raises(ErrorBudgetExceeded, match=r"14 of 39 titles rejected .*top reasons: duplicate_title_id 8, "
                                                  r"no_poster 1, not_an_image 1"):
        run_embed(catalog / "catalog.csv", model[0], refused)
    assert not refused.exists()


def test_incremental_run_embeds_new_and_changed_carries_unchanged_drops_removed(first_run, model, catalog_dir,
                                                                                 tmp_path):
    previous_out, _ = first_run
    previous = read_rows(previous_out)
    catalog = tmp_path / "catalog"
    shutil.copytree(catalog_dir, catalog)
    rows = [row for row in manifest_rows(catalog / "catalog.csv")]
    good = [row for row in rows if row["title_id"] in previous]
    removed, changed = good[:3], good[3:7]
    for row in changed:  # a new poster for the same title
        Image.new("RGB", (64, 96), (200, 30, 30)).save(catalog / row["poster_uri"], "JPEG")
    added = [dict(good[10], title_id=f"new{i}") for i in range(2)]  # new titles reusing an existing poster
    write_manifest_rows(catalog / "catalog.csv", [r for r in rows if r not in removed] + added)

    out = tmp_path / "embeddings"
    stats = run_embed(catalog / "catalog.csv", model[0], out, "--previous", str(previous_out))

    counts = json.loads((out / EMBEDDINGS_MANIFEST_FILE).read_text())["counts"]
    assert {k: counts[k] for k in ("new", "changed", "unchanged", "removed")} == {
        "new": 2, "changed": 4, "unchanged": len(previous) - 7, "removed": 3}
    assert counts == {k: stats[k] for k in counts}
    now = read_rows(out)
    assert set(now) == set(previous) - {r["title_id"] for r in removed} | {"new0", "new1"}
    for tid in set(previous) & set(now) - {r["title_id"] for r in changed}:
        np.testing.assert_array_equal(now[tid][0], previous[tid][0])  # carried over, not recomputed
    changed_ids = [r["title_id"] for r in changed]
    np.testing.assert_allclose(np.stack([now[t][0] for t in changed_ids]),
                               expected_vectors(catalog, model[0], changed_ids), atol=1e-5)
    assert all(now[t][1] != previous[t][1] for t in changed_ids)


def same_files_and_rows(first_out, again_out, atol: float) -> None:
    """The same Parquet files, every column equal but the embedding, which is equal within `atol`."""
    first, again = (json.loads((d / EMBEDDINGS_MANIFEST_FILE).read_text()) for d in (first_out, again_out))
    assert again["files"] == first["files"]
    for name in first["files"]:
        a, b = pq.read_table(first_out / name), pq.read_table(again_out / name)
        assert a.drop(["embedding"]).equals(b.drop(["embedding"]))
        np.testing.assert_allclose(np.stack(a.column("embedding").to_numpy(zero_copy_only=False)),
                                   np.stack(b.column("embedding").to_numpy(zero_copy_only=False)), atol=atol)


def test_rerun_on_same_inputs_gives_the_same_rows(first_run, model, catalog_dir, tmp_path):
    """The rerun from scratch on the same inputs is the multi_processing test's run (compared there with
    `same_files_and_rows`); here the incremental rerun into the same place it reads from, a copy of the first run:
    everything carried over, rows identical to the bit."""
    out = tmp_path / "again"
    shutil.copytree(first_run[0], out)
    files = json.loads((out / EMBEDDINGS_MANIFEST_FILE).read_text())["files"]
    before = {name: pq.read_table(out / name) for name in files}
    stats = run_embed(catalog_dir / "catalog.csv", model[0], out, "--previous", str(out),
                      "--set", "embed.max_rows_per_file=7")
    assert (stats["new"], stats["changed"], stats["unchanged"], stats["removed"]) == (0, 0, N + 5, 0)
    assert json.loads((out / EMBEDDINGS_MANIFEST_FILE).read_text())["files"] == files
    assert all(pq.read_table(out / name).equals(table) for name, table in before.items())


def test_poster_the_model_cannot_decode_is_rejected_as_inference_failed_alone(catalog_dir, tmp_path):
    """A model whose graph accepts JPEG only fails on the posters that reach it as PNG (a PNG named .jpg, and the
    grayscale, CMYK, alpha and palette posters validation converts to PNG). In batches of 4 to 8 a failing batch
    is retried poster by poster: only those titles are lost, each with reason inference_failed and the model's
    error, and their batch-mates are embedded."""
    model_dir = str(tmp_path / "jpeg_only")
    export_jpeg_only_model(model_dir, input_size=32, dim=16, seed=0)
    out = tmp_path / "embeddings"
    stats = run_embed(catalog_dir / "catalog.csv", model_dir, out, "--set", "embed.max_reject_fraction=0.5")
    bad = {row["title_id"]: row["expected"] for row in json.loads((catalog_dir / "bad_rows.json").read_text())}
    failed = {r["title_id"]: r["detail"] for r in pq.read_table(out / REJECTS_DIR).to_pylist()
              if r["reason"] == RejectReason.INFERENCE_FAILED}
    assert set(failed) == {t for t, expected in bad.items() if expected == "accepted"}
    # TensorFlow's own message here quotes the bytes it failed on (and fails to decode them: UnicodeDecodeError);
    # the detail names the error, never the bytes.
    assert all("alone" in detail and "Error" in detail and "\\xff" not in detail for detail in failed.values())
    assert stats["rows"] == N + 5 - len(failed)
    assert set(read_rows(out)) == {row["title_id"] for row in manifest_rows(catalog_dir / "catalog.csv")} - set(
        failed) - {t for t, expected in bad.items() if expected != "accepted"}


def bad_idat_crc_png(path):
    """An RGB PNG poster with one bit of its first IDAT chunk's CRC flipped: PIL reads it, TensorFlow refuses."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 96), (30, 90, 200)).save(buffer, "PNG")
    png = buffer.getvalue()
    at = png.index(b"IDAT") - 4
    crc_at = at + 8 + struct.unpack(">I", png[at:at + 4])[0]
    path.write_bytes(png[:crc_at] + bytes([png[crc_at] ^ 0x01]) + png[crc_at + 1:])


def test_new_model_version_reembeds_every_title_and_bad_rows_of_every_new_kind_are_rejected(first_run, catalog_dir,
                                                                                           tmp_path):
    """A new model version re-embeds every title of the previous run. Its catalog also holds the new bad kinds: a
    PNG with a wrong IDAT CRC (was: its whole batch inference_failed, the poster never named), a line with an
    unbalanced quote (was: the rows after it vanished), and a poster uri climbing out to /etc/passwd (was: read,
    and its first bytes copied into rejects/): each is one reject with its reason, every other title is embedded
    (the title after the quote is new), and the manifest's lines add up."""
    other = str(tmp_path / "model_b")
    export_tiny_model(other, input_size=32, dim=8, seed=1)
    catalog = tmp_path / "catalog"
    shutil.copytree(catalog_dir, catalog)
    bad_idat_crc_png(catalog / "posters" / "crc.png")
    good = manifest_rows(catalog / "catalog.csv")[0]
    with open(catalog / "catalog.csv", "a", newline="") as handle:
        handle.write(f'crc,CRC,Drama,posters/crc.png\nquote,"Unbalanced,Drama,{good["poster_uri"]}\n'
                     f'after,After the quote,Drama,{good["poster_uri"]}\n'
                     f'passwd,Passwd,Drama,{"../" * 40}etc/passwd\n')
    out = tmp_path / "embeddings"
    stats = run_embed(catalog / "catalog.csv", other, out, "--previous", str(first_run[0]))
    assert (stats["new"], stats["changed"], stats["unchanged"]) == (1, N + 5, 0)
    assert read_embeddings(str(out)).vectors.shape == (N + 5 + 1, 8)
    rejects = {r["reason"]: r for r in pq.read_table(out / REJECTS_DIR).to_pylist()}
    assert rejects[RejectReason.UNDECODABLE_IMAGE]["title_id"] == "crc"
    assert "line" in rejects[RejectReason.MALFORMED_RECORD]["detail"]
    assert rejects[RejectReason.POSTER_OUTSIDE_ROOTS]["title_id"] == "passwd"
    assert not any("root:" in r["detail"] for r in rejects.values())
    assert RejectReason.INFERENCE_FAILED not in rejects
    assert "after" in read_rows(out) and stats["rows"] == N + 5 + 1
    lines = stats["lines"]
    assert lines["total"] == N + 11 + 5 and lines["accepted"] + lines["rejected"] + lines["header"] == lines["total"]


def test_a_model_directory_with_another_models_weights_is_refused(catalog_dir, model, tmp_path, capsys):
    """The meta of model A beside the weights of model B: embed refuses it in one line, before any vector is
    written under A's model_version."""
    other = tmp_path / "model_b"
    export_tiny_model(str(other), input_size=32, dim=16, seed=1)
    shutil.copy(os.path.join(model[0], MODEL_META_FILE), other / MODEL_META_FILE)
    out = tmp_path / "embeddings"
    assert embed.main(embed_args(catalog_dir / "catalog.csv", str(other), out)) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "weights are not the ones model_meta.json describes" in message
    assert model[1]["model_version"] in message and not out.exists()


def test_an_export_without_the_pixel_signature_is_fed_bytes_and_gives_the_same_vectors(first_run, model,
                                                                                      catalog_dir, tmp_path):
    """Exports made before the pixel signature existed still embed (their graph decodes the bytes again); the same
    weights give the vectors that the pixel path gave."""
    legacy = str(tmp_path / "legacy-model")
    meta = export_tiny_model(legacy, input_size=32, dim=16, seed=0, pixel_signature=False)
    assert meta["model_version"] == model[1]["model_version"] and not takes_pixels(meta)
    assert takes_pixels(model[1])
    out = tmp_path / "embeddings"
    stats = run_embed(catalog_dir / "catalog.csv", legacy, out)
    assert stats["rows"] == N + 5 and stats["rejected"] == 6
    first, now = read_rows(first_run[0]), read_rows(out)
    assert sorted(now) == sorted(first)
    np.testing.assert_allclose(np.stack([now[t][0] for t in sorted(now)]),
                               np.stack([first[t][0] for t in sorted(first)]), atol=1e-5)


def test_multi_processing_mode_gives_the_same_embeddings(first_run, model, catalog_dir, tmp_path, capsys,
                                                         monkeypatch):
    """Two worker processes: the model handler records the process that loads the model, to show the
    embedding ran outside the test process. The run is also the rerun from scratch on the first run's inputs
    and settings: the same files and rows."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setattr(embed, "PosterModelHandler", PidRecordingHandlers(str(pid_dir)))
    out = tmp_path / "embeddings"
    code = embed.main(embed_args(catalog_dir / "catalog.csv", model[0], out, "--runner=DirectRunner",
                                 "--direct_running_mode=multi_processing", "--direct_num_workers=2",
                                 "--set", "embed.max_rows_per_file=7"))
    assert code == 0
    worker_pids = {int(name) for name in os.listdir(pid_dir)}
    assert worker_pids and os.getpid() not in worker_pids
    assert f"embed: {N + 11} read → {N + 5} embeddings ({N + 5} new" in capsys.readouterr().out
    first, now = read_rows(first_run[0]), read_rows(out)
    assert sorted(now) == sorted(first)
    np.testing.assert_allclose(np.stack([now[t][0] for t in sorted(now)]),
                               np.stack([first[t][0] for t in sorted(first)]), atol=1e-5)
    same_files_and_rows(first_run[0], out, atol=1e-6)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging")]


def test_bench_embed_runs_and_writes_its_figures(tmp_path, capsys):
    """Not a timed test: the benchmark runs on a few posters and reports every figure it promises."""
    out, pstats_file = tmp_path / "embed.json", tmp_path / "embed.pstats"
    assert embed_bench.main(["--n", "6", "--batch", "4", "--set", "model.input_size=32", "--json", str(out),
                             "--profile", str(pstats_file)]) == 0
    figures = json.loads(out.read_text())
    for key in ("bare_images_per_s", "decode_model_images_per_s", "pipeline_images_per_s", "validate_images_per_s"):
        assert figures[key] > 0
    assert figures["pipeline_vs_decode_model"] == pytest.approx(
        figures["pipeline_images_per_s"] / figures["decode_model_images_per_s"], abs=1e-3)
    assert (figures["embedded"], figures["batch_size"]) == (6, 4)
    assert figures["runner"] == "DirectRunner in_memory"  # the config's own runner: nothing added by the bench
    printed = capsys.readouterr().out
    assert "pipeline / decode+model" in printed and "DirectRunner in_memory" in printed
    # The profiled run's parts partition its seconds, and the handler's decode and model were found in it.
    parts = figures["profile"]["parts"]
    assert sum(parts.values()) == pytest.approx(figures["profile"]["seconds"], abs=0.05 * len(parts))
    assert parts["decode (model handler, one call per batch)"] > 0 and parts["model (pixel signature)"] > 0
    assert pstats_file.stat().st_size > 0


# --- bounded memory and no needless reads at 10M titles (issue 12) ------------------------------------------

class _SideInputsOfPrevious(beam.pipeline.PipelineVisitor):
    """Collects the transforms that take rows computed from ReadPreviousEmbeddings as a side input (a dict, list
    or iterable of them: every worker process would hold them whole). A single value (AsSingleton, such as a
    row count that the previous rows contributed to) is not rows of the previous run, and Beam's own composites
    (a combine's default value, a file sink's finalisation) are looked through, not into."""

    def __init__(self):
        self.tainted, self.offenders, self._library = set(), [], []

    def enter_composite_transform(self, node):
        self._library.append(type(node.transform).__module__.startswith("apache_beam."))

    def leave_composite_transform(self, node):
        self._library.pop()

    def visit_transform(self, node):
        from_previous = node.full_label.startswith("ReadPreviousEmbeddings") or any(
            id(pcoll) in self.tainted for pcoll in [*node.inputs, *(side.pvalue for side in node.side_inputs)])
        if not any(self._library) and any(id(side.pvalue) in self.tainted
                                          and not isinstance(side, beam.pvalue.AsSingleton)
                                          for side in node.side_inputs):
            self.offenders.append(node.full_label)
        if from_previous:
            self.tainted.update(id(pcoll) for pcoll in node.outputs.values())


def test_the_previous_run_is_joined_by_title_id_never_a_side_input(first_run, model, catalog_dir, tmp_path):
    pipeline = beam.Pipeline()
    embed.build_pipeline(pipeline, str(catalog_dir / "catalog.csv"), model[0], str(tmp_path / "out"),
                         load_config("configs/local.yaml"), previous_uri=str(first_run[0]))
    visitor = _SideInputsOfPrevious()
    pipeline.visit(visitor)
    assert len(visitor.tainted) > 3  # the previous rows do flow through the graph …
    assert visitor.offenders == []  # … but never into a side input
    labels = [t.unique_name for t in pipeline.to_runner_api().components.transforms.values()]
    assert any("SkipUnchangedPosters/JoinOnTitleId" in label for label in labels)


def test_an_unchanged_catalog_reads_no_poster_byte_and_one_changed_poster_only_its_own(model, tmp_path):
    catalog = tmp_path / "catalog"
    generate_catalog(catalog, n=8, seed=5, width=64, height=96)  # no broken posters: those are read every run
    previous_out = tmp_path / "first"
    first_stats = run_embed(catalog / "catalog.csv", model[0], previous_out)
    poster_bytes = sum(path.stat().st_size for path in catalog.rglob("*.jpg"))
    assert first_stats[POSTER_BYTES_READ] == poster_bytes

    unchanged_out = tmp_path / "unchanged"
    stats = run_embed(catalog / "catalog.csv", model[0], unchanged_out, "--previous", str(previous_out))
    assert (stats[POSTER_BYTES_READ], stats["unchanged"], stats["new"] + stats["changed"]) == (0, 8, 0)
    assert json.loads((unchanged_out / STATS_FILE).read_text())[POSTER_BYTES_READ] == 0
    assert read_rows(unchanged_out).keys() == read_rows(previous_out).keys()

    poster_uri = manifest_rows(catalog / "catalog.csv")[3]["poster_uri"]
    Image.new("RGB", (64, 96), (20, 200, 30)).save(catalog / poster_uri, "JPEG")
    changed_out = tmp_path / "one_changed"
    stats = run_embed(catalog / "catalog.csv", model[0], changed_out, "--previous", str(unchanged_out))
    assert stats[POSTER_BYTES_READ] == (catalog / poster_uri).stat().st_size
    assert (stats["changed"], stats["unchanged"]) == (1, 7)

    # What a full run gives on the catalog as it is now: the exported model called directly on each title's
    # poster, that poster's hash and the title's genres.
    incremental = read_rows(changed_out)
    catalog_rows = {row["title_id"]: row for row in manifest_rows(catalog / "catalog.csv")}
    title_ids = sorted(catalog_rows)
    assert sorted(incremental) == title_ids
    np.testing.assert_allclose(np.stack([incremental[tid][0] for tid in title_ids]),
                               expected_vectors(catalog, model[0], title_ids), atol=1e-5)
    image_config = load_config("configs/local.yaml").image
    for tid in title_ids:
        poster = validate_poster((catalog / catalog_rows[tid]["poster_uri"]).read_bytes(), image_config)
        assert incremental[tid][1:] == (poster.sha256, catalog_rows[tid]["genres"].split("|"))
    tables = [pq.read_table(changed_out / name, columns=["title_id", POSTER_OBJECT_COLUMN]).to_pylist()
              for name in json.loads((changed_out / EMBEDDINGS_MANIFEST_FILE).read_text())["files"]]
    objects = {row["title_id"]: row[POSTER_OBJECT_COLUMN] for table in tables for row in table}
    assert len(objects) == 8 and all(o["size"] > 0 and o["updated"] > 0 and o["uri"] for o in objects.values())


def test_a_previous_run_written_before_poster_objects_is_read_and_its_posters_are_read_again(tmp_path):
    """Files without `poster_object` (older runs): their vectors are still carried by image hash, never by
    metadata, so every poster is read once more and the next run has its metadata."""
    previous = write_embeddings(str(tmp_path / "old"), ["t1", "t2"], unit_vectors(2, dim=16))
    with BeamTestPipeline() as pipeline:
        rows = pipeline | embed.ReadPreviousEmbeddings(previous, MODEL_VERSION)
        assert_that(rows | beam.Map(lambda row: (row["title_id"], sorted(row))),
                    equal_to([(tid, ["embedding", "genres", "image_sha256", "model_version", "title_id"])
                              for tid in ("t1", "t2")]))
    found = {"uri": "/p.jpg", "size": 1, "updated": 1.0, "generation": None, "crc32c": None, "md5": None}
    old_row = {"embedding": [0.0], "image_sha256": "x", "model_version": MODEL_VERSION}
    assert not embed.can_skip_read(found, MODEL_VERSION, old_row)
    assert embed.can_skip_read(found, MODEL_VERSION, {**old_row, POSTER_OBJECT_COLUMN: found})
    assert not embed.can_skip_read(found, "another-model", {**old_row, POSTER_OBJECT_COLUMN: found})
