"""Reading the embed pipeline's Parquet output: manifest first, `_SUCCESS` otherwise, schemas checked."""
import io
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, LEGACY_EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE
from pipelines.embed.reader import EmbeddingsError, describe_embeddings, embedding_matrix, read_embeddings
from tests.pipelines.embeddings_fixture import (
    MODEL_VERSION,
    embeddings_table,
    title_ids,
    unit_vectors,
    write_embeddings,
)


def write_parquet(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def test_reads_every_row_with_its_vector_hash_and_genres(tmp_path):
    vectors = unit_vectors(30)
    found = read_embeddings(write_embeddings(str(tmp_path / "e"), title_ids(30), vectors, files=3))
    assert found.title_ids == title_ids(30) and found.vectors.dtype == np.float32
    np.testing.assert_array_equal(found.vectors, vectors)
    assert found.image_sha256[2] == "sha-tt0000002" and found.genres[:2] == [["Drama"], ["Drama", "Comedy"]]
    assert (found.model_version, found.dim, found.metric, len(found)) == (MODEL_VERSION, 16, "angular", 30)


def test_the_manifest_wins_over_stale_shards_of_an_older_run(tmp_path):
    directory = write_embeddings(str(tmp_path / "e"), title_ids(10), unit_vectors(10), files=2)
    write_parquet(str(tmp_path / "e" / "part-00007.parquet"), embeddings_table(title_ids(5, 100), unit_vectors(5)))
    assert read_embeddings(directory).title_ids == title_ids(10)


def test_a_folder_written_before_side_files_had_a_leading_underscore_is_read_through_its_manifest(tmp_path):
    directory = write_embeddings(str(tmp_path / "e"), title_ids(10), unit_vectors(10), files=2)
    (tmp_path / "e" / EMBEDDINGS_MANIFEST_FILE).rename(tmp_path / "e" / LEGACY_EMBEDDINGS_MANIFEST_FILE)
    write_parquet(str(tmp_path / "e" / "part-00007.parquet"), embeddings_table(title_ids(5, 100), unit_vectors(5)))
    assert read_embeddings(directory).title_ids == title_ids(10)


def test_without_a_manifest_the_success_marked_directory_is_read(tmp_path):
    directory = write_embeddings(str(tmp_path / "e"), title_ids(10), unit_vectors(10), files=2, manifest=False)
    assert read_embeddings(directory).title_ids == title_ids(10)


def test_a_directory_without_manifest_or_success_is_refused(tmp_path):
    write_parquet(str(tmp_path / "e" / "part-00000.parquet"), embeddings_table(title_ids(3), unit_vectors(3)))
    with pytest.raises(EmbeddingsError, match="not published completely: no _SUCCESS"):
        read_embeddings(str(tmp_path / "e"))


def test_a_directory_copied_without_its_success_marker_is_refused_even_with_a_manifest(tmp_path):
    """What a reader sees of a gs:// output being republished: data and manifest, no `_SUCCESS` yet."""
    complete = write_embeddings(str(tmp_path / "complete"), title_ids(6), unit_vectors(6))
    shutil.copytree(complete, tmp_path / "copy", ignore=shutil.ignore_patterns(SUCCESS_FILE))
    assert (tmp_path / "copy" / EMBEDDINGS_MANIFEST_FILE).exists()
    with pytest.raises(EmbeddingsError, match=r"copy is not published completely: no _SUCCESS; rerun the stage"):
        read_embeddings(str(tmp_path / "copy"))


def test_one_parquet_file_can_be_read_directly(tmp_path):
    write_parquet(str(tmp_path / "one.parquet"), embeddings_table(title_ids(3), unit_vectors(3)))
    assert read_embeddings(str(tmp_path / "one.parquet")).title_ids == title_ids(3)


def test_files_of_two_models_are_refused(tmp_path):
    directory = write_embeddings(str(tmp_path / "e"), title_ids(4), unit_vectors(4), files=1)
    write_parquet(str(tmp_path / "e" / "part-00001.parquet"),
                  embeddings_table(title_ids(2, 50), unit_vectors(2), model_version="other-model"))
    storage.write_json(str(tmp_path / "e" / EMBEDDINGS_MANIFEST_FILE),
                       {"files": ["part-00000.parquet", "part-00001.parquet"]})
    with pytest.raises(EmbeddingsError, match="part-00001.parquet: dim/metric/model_version 16/angular/other-model"):
        describe_embeddings(directory)


def test_a_column_of_the_wrong_type_is_named(tmp_path):
    table = embeddings_table(title_ids(2), unit_vectors(2))
    table = table.set_column(1, "embedding", pa.array(unit_vectors(2).astype(np.float64).tolist()))
    write_parquet(str(tmp_path / "bad.parquet"), table)
    with pytest.raises(EmbeddingsError, match="column embedding should be fixed_size_list"):
        read_embeddings(str(tmp_path / "bad.parquet"))


def test_a_manifest_that_disagrees_with_its_files_is_refused(tmp_path):
    directory = write_embeddings(str(tmp_path / "e"), title_ids(6), unit_vectors(6))
    manifest = storage.read_json(str(tmp_path / "e" / EMBEDDINGS_MANIFEST_FILE))
    storage.write_json(str(tmp_path / "e" / EMBEDDINGS_MANIFEST_FILE), {**manifest, "rows": 7})
    with pytest.raises(EmbeddingsError, match="rows is 7 but the files hold 6"):
        describe_embeddings(directory)


def test_a_missing_embedding_is_an_error_naming_the_title():
    table = pa.table({"title_id": ["a", "b"],
                      "embedding": pa.array([[1.0, 0.0], None], pa.list_(pa.float32(), 2))})
    with pytest.raises(EmbeddingsError, match="title_id b"):
        embedding_matrix(table, 2)


def test_reads_from_gcs(gcs_emulator):
    directory = write_embeddings(gcs_emulator.uri("run-1/embeddings"), title_ids(8), unit_vectors(8), files=2)
    assert read_embeddings(directory).title_ids == title_ids(8)


@pytest.mark.parametrize("keep", [0, 0.5])  # emptied, and cut in half (as a killed copy leaves it)
def test_a_truncated_parquet_file_is_named_with_what_to_do(tmp_path, keep):
    """It used to be pyarrow's bare "Parquet magic bytes not found in footer", naming no file."""
    directory = write_embeddings(str(tmp_path / "e"), title_ids(30), unit_vectors(30), files=2)
    path = storage.join(directory, "part-00001.parquet")
    data = storage.read_bytes(path)
    storage.write_bytes(path, data[:int(len(data) * keep)])
    for read in (describe_embeddings, read_embeddings):
        with pytest.raises(EmbeddingsError, match=f"^{path} is not a readable Parquet file .*truncated or damaged: "
                                                  "rerun `posters embed`") as refused:
            read(directory)
        assert "\n" not in str(refused.value)
