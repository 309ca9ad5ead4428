"""Posters by URL, against a local HTTP server this module starts: every failure a reject reason, retries that
succeed, conditional requests that download nothing when the server answers 304."""
import io
import socket
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.common.catalog import CatalogRow
from pipelines.common.http_posters import conditional_headers, is_http
from pipelines.common.posters import (
    POSTER_BYTES_READ,
    POSTERS_NOT_MODIFIED,
    PREVIOUS_OBJECT,
    PosterRejected,
    ReadAndValidatePosters,
    fetch_poster,
)
from pipelines.config import ConfigError, HttpConfig, ImageConfig, load_config
from pipelines.contracts import POSTER_OBJECT_TYPE, RejectReason
from tests.pipelines.http_poster_server import LAST_MODIFIED, PosterServer

# Short timeouts and no backoff keep the matrix fast; retries are still exercised.
HTTP = HttpConfig(retries=2, backoff_s=0, connect_timeout_s=1, read_timeout_s=0.2, total_timeout_s=5,
                  max_bytes=100_000, max_retry_after_s=0.3, max_redirects=3, concurrency=4)
IMAGE = ImageConfig(min_side=32, max_pixels=1_000_000, max_bytes=1_000_000)


def jpeg(colour=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 60), colour).save(buffer, "JPEG")
    return buffer.getvalue()


A, B = jpeg(), jpeg((20, 200, 90))


@pytest.fixture(scope="module")
def server():
    with PosterServer({"a.jpg": A, "b.jpg": B}, slow_s=0.6, huge_bytes=HTTP.max_bytes + 1) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.reset()
    server.posters.update({"a.jpg": A, "b.jpg": B})


def fetch(server, path, config=HTTP, previous=None):
    return fetch_poster(server.url(path), config, previous=previous)


def rejected(server, path, config=HTTP) -> PosterRejected:
    with pytest.raises(PosterRejected) as caught:
        fetch(server, path, config)
    return caught.value


# --- one poster ---------------------------------------------------------------------------------------------

def test_a_poster_by_url_comes_with_the_validators_to_record(server):
    fetched = fetch(server, "/posters/a.jpg")
    assert fetched.data == A
    recorded = fetched.poster_object
    assert recorded["uri"] == server.url("/posters/a.jpg") and recorded["size"] == len(A)
    assert recorded["etag"].startswith('"') and recorded["last_modified"] == LAST_MODIFIED
    assert set(recorded) == set(POSTER_OBJECT_TYPE.names)  # what the embeddings' poster_object column holds


def test_a_slow_server_is_http_timeout_after_the_retries(server):
    started = time.monotonic()
    failure = rejected(server, "/slow")
    assert failure.reason == RejectReason.HTTP_TIMEOUT and "after 3 attempts" in failure.detail
    assert server.hits("/slow") == 3 and time.monotonic() - started < server.slow_s * 3


def test_a_download_past_the_total_deadline_is_http_timeout(server):
    """The server answers within read_timeout_s, but the poster arrives after total_timeout_s."""
    config = HTTP.model_copy(update={"total_timeout_s": 0.1, "read_timeout_s": 2, "retries": 0})
    failure = rejected(server, "/slow", config)
    assert failure.reason == RejectReason.HTTP_TIMEOUT and "total_timeout_s" in failure.detail


@pytest.mark.parametrize("path, reason", [
    ("/missing", RejectReason.HTTP_404),
    ("/posters/nothing.jpg", RejectReason.HTTP_404),
    ("/forbidden", RejectReason.HTTP_403),
    ("/page", RejectReason.HTTP_CONTENT_TYPE),
    ("/huge", RejectReason.HTTP_TOO_LARGE),
    ("/endless", RejectReason.HTTP_TOO_LARGE),
    ("/loop", RejectReason.HTTP_TOO_MANY_REDIRECTS),
])
def test_each_failure_has_its_reason(server, path, reason):
    failure = rejected(server, path)
    assert failure.reason == reason and failure.detail


def test_client_errors_are_not_retried_and_a_declared_oversize_is_never_downloaded(server):
    rejected(server, "/missing")
    rejected(server, "/huge")
    assert server.hits("/missing") == 1 and server.hits("/huge") == 1
    assert "Content-Length" in rejected(server, "/huge").detail


def test_a_server_error_is_retried_and_the_retry_succeeds(server):
    assert fetch(server, "/flaky/2/a.jpg").data == A
    assert server.hits("/flaky/2/a.jpg") == 3


def test_server_errors_past_the_retries_are_http_5xx(server):
    failure = rejected(server, "/broken")
    assert failure.reason == RejectReason.HTTP_5XX and "HTTP 500" in failure.detail and "3 attempts" in failure.detail
    assert server.hits("/broken") == 3


def test_a_429_waits_as_retry_after_says_up_to_the_cap(server):
    started = time.monotonic()
    assert fetch(server, "/busy/a.jpg").data == A
    waited = time.monotonic() - started
    assert server.hits("/busy/a.jpg") == 2 and HTTP.max_retry_after_s <= waited < 1.0  # Retry-After: 1, cut to 0.3


def test_still_rate_limited_after_the_retries_is_http_429(server):
    config = HTTP.model_copy(update={"max_retry_after_s": 0})
    assert rejected(server, "/always-busy", config).reason == RejectReason.HTTP_429
    assert server.hits("/always-busy") == 3


def test_a_redirect_is_followed(server):
    fetched = fetch(server, "/moved/b.jpg")
    assert fetched.data == B and fetched.poster_object["uri"] == server.url("/moved/b.jpg")


def test_a_redirect_out_of_the_allowed_roots_is_refused_before_it_is_followed(server):
    failure = rejected(server, "/away/a.jpg")  # no roots given: the poster's own host only
    assert failure.reason == RejectReason.POSTER_OUTSIDE_ROOTS and "catalog.allowed_roots" in failure.detail
    assert f"redirected to {server.other_base}/posters/a.jpg, outside" in failure.detail
    assert server.hits("/posters/a.jpg") == 0  # refused, not fetched
    with pytest.raises(PosterRejected) as caught:
        fetch_poster(server.url("/away/a.jpg"), HTTP, roots=[server.url("/")])
    assert caught.value.reason == RejectReason.POSTER_OUTSIDE_ROOTS
    roots = [server.url("/away/"), server.other_base + "/posters/"]
    assert fetch_poster(server.url("/away/a.jpg"), HTTP, roots=roots).data == A
    assert fetch_poster(server.url("/moved/b.jpg"), HTTP, roots=[server.url("/")]).data == B


def test_no_server_is_http_connection(server):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PosterRejected) as caught:
        fetch_poster(f"http://127.0.0.1:{port}/a.jpg", HTTP)
    assert caught.value.reason == RejectReason.HTTP_CONNECTION


# --- conditional requests -----------------------------------------------------------------------------------

def test_an_unchanged_poster_is_not_downloaded_again(server):
    first = fetch(server, "/posters/a.jpg")
    server.reset()
    second = fetch(server, "/posters/a.jpg", previous=first.poster_object)
    assert second.data is None and second.poster_object == first.poster_object
    (_, headers), = server.requests
    assert headers["If-None-Match"] == first.poster_object["etag"]
    assert server.body_bytes["/posters/a.jpg"] == 0


def test_a_changed_poster_is_downloaded_with_its_new_etag(server):
    first = fetch(server, "/posters/a.jpg")
    server.posters["a.jpg"] = B
    second = fetch(server, "/posters/a.jpg", previous=first.poster_object)
    assert second.data == B and second.poster_object["etag"] != first.poster_object["etag"]


def test_last_modified_alone_makes_the_request_conditional(server):
    first = fetch(server, "/dated/a.jpg")
    assert first.poster_object["etag"] is None
    assert conditional_headers(first.poster_object) == {"If-Modified-Since": LAST_MODIFIED}
    assert fetch(server, "/dated/a.jpg", previous=first.poster_object).data is None
    assert server.body_bytes["/dated/a.jpg"] == len(A)  # the first download only


def test_validators_recorded_for_another_url_are_not_sent(server):
    recorded = fetch(server, "/posters/a.jpg").poster_object
    server.reset()
    assert fetch(server, "/moved/a.jpg", previous=recorded).data == A  # /moved/a.jpg redirects to /posters/a.jpg
    assert all("If-None-Match" not in headers for _, headers in server.requests)


def test_no_recorded_validators_means_a_plain_get(server):
    assert conditional_headers(None) == {} and conditional_headers({"etag": None, "last_modified": None}) == {}
    assert fetch(server, "/posters/a.jpg", previous={"etag": None}).data == A


# --- the Beam part ------------------------------------------------------------------------------------------

def test_read_and_validate_posters_reads_urls_and_names_every_failure(server):
    rows = [CatalogRow(name, "", ("Drama",), server.url(path), number) for number, (name, path) in enumerate([
        ("ok", "/posters/a.jpg"), ("moved", "/moved/b.jpg"), ("retried", "/flaky/1/a.jpg"), ("gone", "/missing"),
        ("page", "/page"), ("big", "/huge"), ("text", "/posters/text.jpg")])]
    server.posters["text.jpg"] = b"not an image at all, served as image/jpeg"
    pipeline = BeamTestPipeline()
    posters, rejects = pipeline | beam.Create(rows) | ReadAndValidatePosters(IMAGE, 0, HTTP)
    assert_that(posters | "Ids" >> beam.MapTuple(lambda row, poster: (row.title_id, poster.width)),
                equal_to([("ok", 40), ("moved", 40), ("retried", 40)]), label="Posters")
    assert_that(rejects | "Reasons" >> beam.Map(lambda r: (r["title_id"], r["reason"])),
                equal_to([("gone", RejectReason.HTTP_404), ("page", RejectReason.HTTP_CONTENT_TYPE),
                          ("big", RejectReason.HTTP_TOO_LARGE), ("text", RejectReason.NOT_AN_IMAGE)]),
                label="Rejects")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters[POSTER_BYTES_READ] == 2 * len(A) + len(B) + len(server.posters["text.jpg"])


def test_conditional_reads_send_304s_to_their_own_output_and_count_them(server):
    recorded = fetch(server, "/posters/a.jpg").poster_object
    server.reset()
    rows = [(CatalogRow("same", "", ("Drama",), server.url("/posters/a.jpg"), 1), {PREVIOUS_OBJECT: recorded}),
            (CatalogRow("new", "", ("Drama",), server.url("/posters/b.jpg"), 2), {PREVIOUS_OBJECT: None})]
    pipeline = BeamTestPipeline()
    posters, rejects, not_modified = pipeline | beam.Create(rows) | ReadAndValidatePosters(
        IMAGE, 0, HTTP, with_context=True, conditional=True)
    assert_that(posters | "Ids" >> beam.Map(lambda item: (item[0].title_id, item[3]["size"])),
                equal_to([("new", len(B))]), label="Posters")
    assert_that(not_modified | "Same" >> beam.MapTuple(lambda row, fetched, context: (row.title_id, fetched.data)),
                equal_to([("same", None)]), label="NotModified")
    assert_that(rejects, equal_to([]), label="Rejects")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters[POSTERS_NOT_MODIFIED] == 1 and counters[POSTER_BYTES_READ] == len(B)
    assert server.body_bytes["/posters/a.jpg"] == 0


def test_evaluate_and_similar_read_posters_by_url_through_the_same_fetch(server):
    from pipelines.evaluate.command import Posters
    from pipelines.similar.contact_sheets import POSTER_SIZE, _poster

    posters = Posters({"t": server.url("/posters/a.jpg"), "gone": server.url("/missing")}, HTTP)
    assert posters.get("t") == A and posters.get("gone") is None
    card = _poster(server.url("/posters/a.jpg"), HTTP)
    red, green, blue = card.getpixel((POSTER_SIZE[0] // 2, POSTER_SIZE[1] // 2))
    assert red > 150 and green < 80 and blue < 100  # the poster's colour, not the grey "unreadable" card


# --- settings -----------------------------------------------------------------------------------------------

def test_http_settings_are_checked_and_name_the_key():
    assert load_config(None, ["http.concurrency=2"]).http.concurrency == 2
    with pytest.raises(ConfigError, match=r"http.read_timeout_s must be positive"):
        load_config(None, ["http.read_timeout_s=0"])
    with pytest.raises(ConfigError, match=r"http.content_types must be a non-empty list"):
        load_config(None, ["http.content_types=[]"])
    with pytest.raises(ConfigError, match=r"unknown key http.timeout"):
        load_config(None, ["http.timeout=3"])


def test_only_http_and_https_uris_go_through_http():
    assert is_http("https://cdn.example/p.jpg") and is_http("HTTP://cdn.example/p.jpg")
    assert not is_http("gs://bucket/p.jpg") and not is_http("/posters/http.jpg") and not is_http(None)
