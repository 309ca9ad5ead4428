"""`posters embed` on DirectRunner over a catalog whose posters are http:// URLs served by a local server: the
first run downloads them, a nightly rerun with --previous asks conditionally and downloads nothing unchanged."""
import csv
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from PIL import Image

from pipelines.common.posters import POSTER_BYTES_READ
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, POSTER_OBJECT_COLUMN, REJECTS_DIR, RejectReason
from pipelines.embed import pipeline as embed
from pipelines.embed.reader import read_embeddings
from tests.pipelines.embed.tiny_model import export_tiny_model
from tests.pipelines.http_poster_server import PosterServer

COLOURS = {"t1": (200, 30, 60), "t2": (20, 200, 90), "t3": (30, 60, 220)}


def jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (40, 60), colour)
    image.paste((10, 10, 10), (20, 0, 40, 60))
    image.save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model"))
    export_tiny_model(path, input_size=32, dim=16, seed=0)
    return path


@pytest.fixture(scope="module")
def server():
    with PosterServer({f"{tid}.jpg": jpeg(colour) for tid, colour in COLOURS.items()}) as running:
        yield running


@pytest.fixture(scope="module")
def catalog(server, tmp_path_factory):
    """Three posters by URL, one URL that is gone, one that redirects to a host outside the allowed roots."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title_id", "title", "genres", "poster_uri"])
        for tid in COLOURS:
            writer.writerow([tid, tid.upper(), "Drama|Action", server.url(f"/posters/{tid}.jpg")])
        writer.writerow(["gone", "Gone", "Drama", server.url("/missing")])
        writer.writerow(["bounced", "Bounced", "Drama", server.url("/away/t1.jpg")])
    return path


def run_embed(catalog, model, out, server, *extra):
    args = ["--catalog", str(catalog), "--model", model, "--out", str(out),
            "--set", f"catalog.allowed_roots=['{server.base}/']", "--set", "embed.max_reject_fraction=0.5",
            "--set", "http.retries=0", "--set", "http.read_timeout_s=5", *extra]
    return embed.run(args, test_pipeline=BeamTestPipeline())


@pytest.fixture(scope="module")
def first_run(catalog, model, server, tmp_path_factory):
    server.reset()
    out = tmp_path_factory.mktemp("night1") / "embeddings"
    return out, run_embed(catalog, model, out, server)


def test_posters_by_url_are_embedded_a_gone_url_is_http_404_and_a_redirect_away_is_refused(first_run, server):
    out, stats = first_run
    assert (stats["new"], stats["rejected"], stats["rejected_by_reason"]) == (
        3, 2, {RejectReason.HTTP_404: 1, RejectReason.POSTER_OUTSIDE_ROOTS: 1})
    assert stats[POSTER_BYTES_READ] == sum(len(data) for data in server.posters.values())
    assert set(read_embeddings(str(out)).title_ids) == set(COLOURS)
    rejects = {row["title_id"]: row for row in pq.read_table(out / REJECTS_DIR).to_pylist()}
    assert (rejects["gone"]["uri"], rejects["gone"]["reason"]) == (server.url("/missing"), "http_404")
    assert (rejects["bounced"]["uri"], rejects["bounced"]["reason"]) == (server.url("/away/t1.jpg"),
                                                                         "poster_outside_roots")
    assert f"redirected to {server.other_base}/posters/t1.jpg" in rejects["bounced"]["detail"]


def test_the_etag_and_last_modified_are_recorded_with_each_embedding(first_run, server):
    out, _ = first_run
    files = json.loads((out / EMBEDDINGS_MANIFEST_FILE).read_text())["files"]
    objects = {row["title_id"]: row[POSTER_OBJECT_COLUMN] for name in files
               for row in pq.read_table(out / name, columns=["title_id", POSTER_OBJECT_COLUMN]).to_pylist()}
    assert set(objects) == set(COLOURS)
    for tid, recorded in objects.items():
        assert recorded["uri"] == server.url(f"/posters/{tid}.jpg") and recorded["etag"] and recorded["last_modified"]
        assert recorded["size"] == len(server.posters[f"{tid}.jpg"])


def test_a_nightly_rerun_downloads_only_the_poster_that_changed_on_the_server(first_run, catalog, model, server,
                                                                             tmp_path):
    previous, _ = first_run
    server.reset()
    server.posters["t2.jpg"] = jpeg((250, 250, 0))
    try:
        stats = run_embed(catalog, model, tmp_path / "night2", server, "--previous", str(previous))
    finally:
        server.posters["t2.jpg"] = jpeg(COLOURS["t2"])
    assert (stats["unchanged"], stats["not_modified"], stats["changed"], stats["new"]) == (2, 2, 1, 0)
    assert stats[POSTER_BYTES_READ] == server.body_bytes["/posters/t2.jpg"] == sum(server.body_bytes.values()) > 0
    conditional = [headers for path, headers in server.requests if path.startswith("/posters/")]
    assert len(conditional) == 3 and all("If-None-Match" in headers for headers in conditional)
    before, now = read_rows(previous), read_rows(tmp_path / "night2")
    for tid in ("t1", "t3"):
        np.testing.assert_array_equal(now[tid][0], before[tid][0])  # carried over on a 304
        assert now[tid][1] == before[tid][1]
    assert now["t2"][1] != before["t2"][1]
    assert "2 of them by HTTP 304" in embed.summary_line(stats)


def read_rows(out) -> dict:
    table = read_embeddings(str(out))
    return {tid: (vector, sha) for tid, vector, sha in zip(table.title_ids, table.vectors, table.image_sha256)}
