import pytest


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """An index root on local disk, or on fake-gcs-server (which enforces generation preconditions)."""
    if request.param == "local":
        return str(tmp_path / "index")
    return request.getfixturevalue("fake_gcs").uri("index")
