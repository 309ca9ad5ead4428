"""The GCS fixtures reach the real clients: Beam's FileSystems reads what it wrote; preconditions are enforced."""
import pytest
from google.api_core.exceptions import PreconditionFailed

from pipelines.common import storage


@pytest.mark.parametrize("server", ["gcs_emulator", "fake_gcs"])
def test_filesystems_round_trip(server, request):
    gcs = request.getfixturevalue(server)
    storage.write_json(gcs.uri("a/b.json"), {"x": 1})
    assert storage.read_json(gcs.uri("a/b.json")) == {"x": 1}
    assert storage.list_files(gcs.uri("a")) == [gcs.uri("a/b.json")]


def test_fake_gcs_refuses_a_second_create_only_write(fake_gcs):
    blob = fake_gcs.client.bucket(fake_gcs.bucket).blob("CURRENT")
    blob.upload_from_string(b"v1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        fake_gcs.client.bucket(fake_gcs.bucket).blob("CURRENT").upload_from_string(b"v2", if_generation_match=0)
