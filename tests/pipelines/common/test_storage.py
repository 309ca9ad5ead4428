"""Publishing a staging directory: on gs:// `_SUCCESS` goes first and comes back last, and nothing stale stays."""
import json
import os
import subprocess
import sys

import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE
from pipelines.embed.reader import read_embeddings
from tests.pipelines.embeddings_fixture import title_ids, unit_vectors, write_embeddings


def _staged(final: str, ids: list[str], files: int) -> str:
    staging = storage.staging_uri(final)
    write_embeddings(staging, ids, unit_vectors(len(ids)), files=files)
    storage.delete_objects([storage.join(staging, SUCCESS_FILE)])  # a staging directory has no marker yet
    return staging


def test_republishing_on_gcs_leaves_no_stale_files_and_ends_with_success(fake_gcs):
    final = fake_gcs.uri("run/embeddings")
    storage.publish_directory(_staged(final, title_ids(9), files=3), final, {"rows": 9})
    storage.write_bytes(storage.join(final, "leftover.txt"), b"not part of any output")
    storage.publish_directory(_staged(final, title_ids(4, 100), files=1), final, {"rows": 4})
    assert storage.list_files(final) == [storage.join(final, name) for name in
                                         (SUCCESS_FILE, EMBEDDINGS_MANIFEST_FILE, "part-00000.parquet")]
    assert json.loads(storage.read_bytes(storage.join(final, SUCCESS_FILE))) == {"rows": 4}
    assert read_embeddings(final).title_ids == title_ids(4, 100)
    assert not [path for path in storage.list_files(fake_gcs.uri()) if "/.staging-" in path]


def test_on_gcs_readers_are_locked_out_while_data_and_then_manifest_are_copied(fake_gcs, monkeypatch):
    final = fake_gcs.uri("run/embeddings")
    storage.publish_directory(_staged(final, title_ids(6), files=2), final)
    copies = []  # (names copied, was `final` complete at that moment)
    real_copy = FileSystems.copy

    def recording_copy(sources, targets):
        copies.append(([t.rsplit("/", 1)[-1] for t in targets], storage.is_complete(final)))
        return real_copy(sources, targets)

    monkeypatch.setattr(FileSystems, "copy", recording_copy)
    storage.publish_directory(_staged(final, title_ids(6, 50), files=2), final)
    assert copies == [(["part-00000.parquet", "part-00001.parquet"], False), ([EMBEDDINGS_MANIFEST_FILE], False)]
    assert storage.is_complete(final)


# --- local writes are atomic; a failed local publish puts the old output back ---------------------------------
def test_a_local_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "run" / SUCCESS_FILE
    storage.write_bytes(str(target), b"first")
    storage.write_bytes(str(target), b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert os.listdir(target.parent) == [SUCCESS_FILE]


def test_a_local_write_that_fails_leaves_the_old_content(tmp_path):
    target = tmp_path / "state.json"
    storage.write_json(str(target), {"stage": "embed"})
    with pytest.raises(TypeError):
        storage.write_bytes(str(target), "not bytes")  # fails after the temporary file was opened
    assert json.loads(target.read_text()) == {"stage": "embed"}
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_process_killed_mid_write_leaves_the_old_content(tmp_path):
    """Killed after writing the new bytes but before the rename: Beam's in-place write would have left the
    marker truncated; now the old marker is intact."""
    target = tmp_path / SUCCESS_FILE
    storage.write_json(str(target), {"rows": 9})
    code = ("import os, sys; from pipelines.common import storage; os.replace = lambda *args: os._exit(1); "
            "storage.write_json(sys.argv[1], {'rows': 4, 'padding': 'x' * 100000})")
    child = subprocess.run([sys.executable, "-c", code, str(target)], stderr=subprocess.PIPE, text=True)
    assert child.returncode == 1, child.stderr
    assert json.loads(target.read_text()) == {"rows": 9}


def test_a_local_publish_whose_rename_fails_puts_the_old_output_back(tmp_path):
    final = str(tmp_path / "run" / "embeddings")
    staging = storage.staging_uri(final)
    write_embeddings(staging, title_ids(5), unit_vectors(5), files=1)
    storage.publish_directory(staging, final, {"rows": 5})
    missing_staging = storage.staging_uri(final)  # never written: renaming it fails
    with pytest.raises(FileNotFoundError):
        storage.publish_directory(missing_staging, final, {"rows": 0})
    assert storage.is_complete(final) and read_embeddings(final).title_ids == title_ids(5)
    assert json.loads(storage.read_bytes(storage.join(final, SUCCESS_FILE))) == {"rows": 5}
    assert sorted(os.listdir(tmp_path / "run")) == ["embeddings"]


# --- an output may not be, contain or lie inside an input, nor be an existing file ---------------------------
@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path):
    """A directory on local disk or on fake-gcs-server holding `catalog/catalog.csv` and `index/CURRENT`."""
    found = str(tmp_path) if request.param == "local" else request.getfixturevalue("fake_gcs").uri("data")
    storage.write_bytes(storage.join(found, "catalog", "catalog.csv"), b"title_id\n")
    storage.write_bytes(storage.join(found, "index", "CURRENT"), b"{}")
    return found.rstrip("/")


@pytest.mark.parametrize("out, relation", [
    ("catalog", "contains"),  # the directory that holds the catalog (what `embed --out DIR` deleted)
    ("", "contains"),
    ("catalog/catalog.csv", "is an existing file"),
    ("index", "is"),  # `candidates --out <index root>`
    ("index/", "is"),
    ("other/../index", "is"),
    ("index/2026-01-01", "lies inside"),
])
def test_an_output_that_overlaps_an_input_or_is_a_file_is_refused(base, out, relation):
    inputs = {"--catalog": storage.join(base, "catalog", "catalog.csv"), "--index": storage.join(base, "index")}
    target = f"{base}/{out}" if out else base
    with pytest.raises(storage.OutputLocationError, match=relation) as refused:
        storage.check_output_location(target, inputs)
    assert "\n" not in str(refused.value) and target in str(refused.value)


@pytest.mark.parametrize("out", ["embeddings", "catalog-2", "index2", "candidates/2026-01-01"])
def test_an_output_beside_the_inputs_is_allowed(base, out):
    storage.check_output_location(f"{base}/{out}", {"--catalog": storage.join(base, "catalog", "catalog.csv"),
                                                    "--index": storage.join(base, "index"), "--previous": None})


def test_a_symlinked_spelling_of_an_input_directory_is_the_same_directory(tmp_path):
    (tmp_path / "catalog").mkdir()
    os.symlink(tmp_path / "catalog", tmp_path / "link")
    with pytest.raises(storage.OutputLocationError, match="is the input"):
        storage.check_output_location(str(tmp_path / "link"), {"--catalog": str(tmp_path / "catalog")})


def test_a_glob_input_is_refused_only_when_the_output_holds_what_it_matches(tmp_path):
    history = str(tmp_path / "history" / "*.csv")
    with pytest.raises(storage.OutputLocationError, match="contains the input --history"):
        storage.check_output_location(str(tmp_path / "history"), {"--history": history})
    with pytest.raises(storage.OutputLocationError, match="is matched by"):
        storage.check_output_location(str(tmp_path / "history" / "out.csv"), {"--history": history})
    storage.check_output_location(str(tmp_path / "history" / "candidates"), {"--history": history})


def test_an_output_may_be_an_input_it_is_allowed_to_replace(tmp_path):
    previous = str(tmp_path / "embeddings")
    storage.check_output_location(previous, {"--previous": previous}, may_be=("--previous",))
    with pytest.raises(storage.OutputLocationError, match="lies inside"):
        storage.check_output_location(previous + "/new", {"--previous": previous}, may_be=("--previous",))
