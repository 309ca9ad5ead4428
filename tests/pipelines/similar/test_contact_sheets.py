"""`posters similar` / `posters mix`: the right neighbours from the published index, drawn as a contact sheet whose
tiles are the catalog's posters."""
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.common.catalog import read_catalog
from pipelines.config import CatalogConfig
from pipelines.index.loader import load_index
from pipelines.similar import contact_sheets as views
from pipelines.synthetic.catalog import generate_catalog
from tests.pipelines.candidates.candidate_inputs import build_index, exact_neighbours, unit_vectors, write_embeddings

K = 6


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    generate_catalog(root / "catalog", n=14, seed=5, width=64, height=96)
    catalog = str(root / "catalog" / "catalog.csv")
    rows = read_catalog(catalog, CatalogConfig())
    title_ids = [row.title_id for row in rows]
    vectors = unit_vectors(len(title_ids), 8, seed=11)
    embeddings = write_embeddings(str(root / "embeddings"), title_ids, vectors)
    build_index(embeddings, str(root / "index"))
    return {"root": root, "catalog": catalog, "rows": {r.title_id: r for r in rows}, "title_ids": title_ids,
            "vectors": vectors, "index": str(root / "index")}


def _argv(published, *titles, out):
    return ["--config", "configs/local.yaml", "--index", published["index"], "--catalog", published["catalog"],
            *titles, "-k", str(K), "--out", str(out)]


def _tile_pixels(sheet: Image.Image, row: int, column: int) -> np.ndarray:
    x = views.GAP + column * (views.POSTER_SIZE[0] + views.GAP)
    y = views.HEADING_HEIGHT + views.GAP + row * (views.POSTER_SIZE[1] + views.CAPTION_HEIGHT + views.GAP)
    return np.asarray(sheet.crop((x, y, x + views.POSTER_SIZE[0], y + views.POSTER_SIZE[1])))


def test_similar_finds_the_exact_neighbours_without_the_query_itself(published):
    ids, vectors = published["title_ids"], published["vectors"]
    found = views.similar_titles(load_index(published["index"]), ids[3], K)
    expected = exact_neighbours(vectors[3], ids, vectors, {ids[3]}, K)
    assert [t for t, _ in found] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)


def test_similar_draws_the_query_poster_then_its_neighbours_posters(published, tmp_path, capsys):
    ids, rows = published["title_ids"], published["rows"]
    out = tmp_path / "grid.png"
    assert views.similar_main(_argv(published, ids[3], out=out)) == 0
    ranked = views.similar_titles(load_index(published["index"]), ids[3], K)
    sheet = Image.open(out).convert("RGB")
    cell_h = views.POSTER_SIZE[1] + views.CAPTION_HEIGHT + views.GAP
    assert sheet.size == (views.GAP + views.COLUMNS * (views.POSTER_SIZE[0] + views.GAP),
                          views.HEADING_HEIGHT + views.GAP + 3 * cell_h)  # the query row + 6 neighbours in 2 rows
    np.testing.assert_array_equal(_tile_pixels(sheet, 0, 0), np.asarray(views._poster(rows[ids[3]].poster_uri)))
    np.testing.assert_array_equal(_tile_pixels(sheet, 1, 0), np.asarray(views._poster(rows[ranked[0][0]].poster_uri)))
    np.testing.assert_array_equal(_tile_pixels(sheet, 2, 0), np.asarray(views._poster(rows[ranked[5][0]].poster_uri)))
    assert f"{ranked[0][1]:.3f}  {ranked[0][0]}" in capsys.readouterr().out


def test_mix_finds_the_neighbours_of_the_normalised_average_without_the_inputs(published, tmp_path):
    ids, vectors = published["title_ids"], published["vectors"]
    out = tmp_path / "mix.png"
    assert views.mix_main(_argv(published, ids[0], ids[1], out=out)) == 0
    average = (vectors[0] + vectors[1]) / np.linalg.norm(vectors[0] + vectors[1])
    expected = exact_neighbours(average, ids, vectors, {ids[0], ids[1]}, K)
    found = views.mixed_titles(load_index(published["index"]), [ids[0], ids[1]], K)
    assert [t for t, _ in found] == [t for t, _ in expected]
    sheet = Image.open(out).convert("RGB")
    np.testing.assert_array_equal(_tile_pixels(sheet, 0, 1),
                                  np.asarray(views._poster(published["rows"][ids[1]].poster_uri)))


def test_a_title_may_be_named_by_its_title_when_only_one_has_it(published):
    catalog = published["rows"]
    unique = next(t for t, row in catalog.items() if sum(r.title == row.title for r in catalog.values()) == 1)
    assert views.resolve_title(catalog[unique].title.upper(), catalog) == unique
    with pytest.raises(ValueError, match="neither a title_id nor a title"):
        views.resolve_title("no such film", catalog)


def test_an_unknown_title_exits_1_and_draws_nothing(published, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert views.similar_main(_argv(published, "tt9999999", out=out)) == 1
    assert "tt9999999" in capsys.readouterr().err
    assert not out.exists()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_an_index_root_where_nothing_is_published_is_a_one_line_error(published, tmp_path, capsys):
    argv = _argv({**published, "index": str(tmp_path / "no-index")}, published["title_ids"][0],
                 out=tmp_path / "grid.png")
    assert views.similar_main(argv) == 1
    err = _one_line_error(capsys)
    assert err.startswith("posters similar: ") and "build one with `posters index`" in err
    assert not (tmp_path / "grid.png").exists()


def test_a_corrupted_index_shard_is_a_one_line_error_naming_the_file(published, tmp_path, capsys):
    index = tmp_path / "index"
    shutil.copytree(published["index"], index)
    shard = sorted(index.glob("*/shard-*.faiss"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    argv = _argv({**published, "index": str(index)}, published["title_ids"][0], out=tmp_path / "grid.png")
    assert views.similar_main(argv) == 1
    err = _one_line_error(capsys)
    assert err.startswith("posters similar: ") and f"{shard.name} is corrupted" in err


def test_a_missing_catalog_is_a_one_line_error(published, tmp_path, capsys):
    ids = published["title_ids"]
    argv = _argv({**published, "catalog": str(tmp_path / "missing.csv")}, ids[0], ids[1], out=tmp_path / "mix.png")
    assert views.mix_main(argv) == 1
    err = _one_line_error(capsys)
    assert err.startswith("posters mix: ") and "catalog manifest not found" in err


def test_an_unreadable_poster_becomes_a_grey_card_not_a_crash(tmp_path):
    card = np.asarray(views._poster(str(tmp_path / "missing.jpg")))
    assert card.shape == (views.POSTER_SIZE[1], views.POSTER_SIZE[0], 3)
    assert (card == 200).mean() > 0.9
