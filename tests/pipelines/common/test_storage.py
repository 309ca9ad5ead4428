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
