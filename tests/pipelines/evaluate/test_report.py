"""report.html is one self-contained page that real headless Chromium renders: not blank, every image loaded,
no console error. Chromium is installed with apt-get when it is missing (a failed install fails the test)."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from pipelines.common.retrieval_metrics import genre_pair_distances, retrieval_metrics, separation
from pipelines.evaluate import embedding_map, pictures
from pipelines.evaluate.report import PosterRow, PosterTile, report_html, thumbnail_jpeg
from tests.pipelines.evaluate.browser import check_page, ensure_chromium

GENRES = ["Comedy", "Drama", "Horror"]


@pytest.fixture(scope="session")
def chromium():
    return ensure_chromium()


def _poster(colour) -> bytes:
    image = Image.new("RGB", (60, 90), colour)
    image.paste((255, 255, 255), (10, 10, 50, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def page() -> str:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.eye(3), 10, axis=0)
    vectors = labels * 3 + rng.normal(0, 1, labels.shape)
    retrieval = {"embedding": retrieval_metrics(vectors, labels, 5, GENRES),
                 "random": retrieval_metrics(rng.normal(size=(30, 3)), labels, 5, GENRES)}
    same, different = genre_pair_distances(vectors, labels)
    distances = {"embedding": separation(same, different)}
    evaluation = {"k": 5, "created": "today", "model_version": "m1", "inputs": {"catalog": "c.csv"},
                  "retrieval": retrieval, "distances": distances, "gates": {"failures": ["a gate that failed"]}}
    primary = [GENRES[int(np.argmax(row))] for row in labels]
    posters = {i: _poster((40 * i % 255, 90, 160)) for i in (0, 10, 20)}
    charts = {"retrieval_by_genre": pictures.retrieval_by_genre_png(retrieval, 5),
              "distance_histograms": pictures.distance_histograms_png(same, different, distances["embedding"], "x"),
              "map": embedding_map.map_png(embedding_map.project_2d(vectors, "pca", 0), primary, posters, "PCA")}
    tiles = [PosterTile(thumbnail_jpeg(_poster((200, 30 * i, 40))), f"title {i}", f"#{i}") for i in range(4)]
    grids = [PosterRow("Comedy", tiles[:1], tiles[1:]), PosterRow("no poster", [PosterTile(None, "gone", "")], [])]
    return report_html(evaluation, charts, grids, PosterRow("mix", tiles[:2], tiles[2:]))


def test_the_report_is_self_contained(page):
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 + 4 + 4 and all(s.startswith("data:image/") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "a gate that failed" in page and "Horror" in page  # the grey card of a missing poster is no <img>


def test_the_report_renders_in_headless_chromium(page, chromium, tmp_path):
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    result = check_page(tmp_path / "report.html", tmp_path / "report.png")
    assert result["console_errors"] == []
    assert result["images"] == 11 and result["broken_images"] == []
    with Image.open(tmp_path / "report.png") as shot:
        pixels = np.asarray(shot.convert("RGB"), np.float32)
    assert pixels.shape[0] > 1000 and pixels.std() > 20  # a long page with ink on it, not a blank one
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 100


def test_the_browser_check_sees_a_broken_image_and_a_console_error(chromium, tmp_path):
    (tmp_path / "bad.html").write_text('<html><body><img src="data:image/png;base64,AAAA">'
                                       '<script>console.error("boom")</script></body></html>')
    result = check_page(tmp_path / "bad.html", tmp_path / "bad.png")
    assert len(result["broken_images"]) == 1 and any("boom" in e for e in result["console_errors"])


def test_a_failed_chromium_install_is_an_error_not_a_skip(monkeypatch):
    import subprocess

    from tests.pipelines.evaluate import browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 100, "", "E: no network"))
    with pytest.raises(RuntimeError, match="apt-get install chromium failed"):
        browser.ensure_chromium()


def test_a_map_of_a_handful_of_titles_falls_back_to_pca():
    assert embedding_map.projection_for("umap", 5) == "pca" and embedding_map.projection_for("umap", 500) == "umap"
    points = embedding_map.project_2d(np.eye(3), "umap", 0)  # UMAP itself fails on 3 points
    assert points.shape == (3, 2)
