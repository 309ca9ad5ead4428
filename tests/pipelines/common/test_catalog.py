"""The one catalog reader: CSV, JSONL and Parquet manifests, column mapping, genre splitting, poster locations."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common.catalog import CatalogError, CatalogRow, ReadCatalog, read_catalog, split_genres
from pipelines.config import CatalogConfig, load_config

# The public "Movie Genre from its Poster" manifest as it comes: latin-1 bytes, quoted titles with commas,
# a row without genres, and posters that live elsewhere as <imdbId>.jpg.
MOVIE_GENRE_CSV = (
    b"imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n"
    b"114709,http://www.imdb.com/title/tt114709,Toy Story (1995),8.3,Animation|Adventure|Comedy,"
    b"https://images-na.ssl-images-amazon.com/images/M/a.jpg\n"
    b'113497,http://www.imdb.com/title/tt113497,"Girl, Interrupted (1999)",7.3,Biography|Drama,'
    b"https://images-na.ssl-images-amazon.com/images/M/b.jpg\n"
    b"211915,http://www.imdb.com/title/tt211915,Le fabuleux destin d'Am\xe9lie Poulain (2001),8.3,Comedy|Romance,"
    b"https://images-na.ssl-images-amazon.com/images/M/c.jpg\n"
    b"999999,http://www.imdb.com/title/tt999999,No Genre (2000),5.0,,\n"
)
MOVIE_GENRE_MAPPING = {"imdbId": "title_id", "Title": "title", "Genre": "genres"}


def write_csv(path, text):
    path.write_text(text)
    return str(path)


def test_csv_poster_uris_resolve_against_the_manifest_directory(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                   "t1,One,Drama|Comedy,posters/t1.jpg\n"
                                                   "t2,Two,Horror,/elsewhere/t2.png\n"
                                                   "t3,Three,Drama,gs://bucket/t3.jpg\n")
    rows = read_catalog(manifest, CatalogConfig())
    assert rows == [
        CatalogRow("t1", "One", ("Drama", "Comedy"), str(tmp_path / "posters" / "t1.jpg"), 1),
        CatalogRow("t2", "Two", ("Horror",), "/elsewhere/t2.png", 2),
        CatalogRow("t3", "Three", ("Drama",), "gs://bucket/t3.jpg", 3),
    ]


def test_empty_cells_are_kept_for_the_pipeline_to_reject(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                   ",No id,Drama,a.jpg\n"
                                                   "t2,,,b.jpg\n"
                                                   "t3,No poster,Drama,\n")
    rows = read_catalog(manifest, CatalogConfig())
    assert [(r.title_id, r.title, r.genres, r.poster_uri is None) for r in rows] == [
        (None, "No id", ("Drama",), False), ("t2", "", (), False), ("t3", "No poster", ("Drama",), True)]


def test_jsonl_genre_lists_are_taken_as_they_are(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"title_id": 7, "title": "Seven", "genres": ["Sci-Fi", " Action ", "Sci-Fi"], "poster_uri": "p/7.jpg"},
        {"title_id": "t8", "title": "Eight", "genres": "Drama, Romance", "poster_uri": "p/8.jpg"},
    ]) + "\n\n")
    rows = read_catalog(str(path), CatalogConfig())
    assert [(r.title_id, r.genres) for r in rows] == [("7", ("Sci-Fi", "Action")), ("t8", ("Drama", "Romance"))]


def test_parquet_with_integer_ids_and_no_poster_column_uses_poster_root(tmp_path):
    table = pa.table({"id": pa.array([114709, 113497], pa.int64()), "name": ["Toy Story", "Jumanji"],
                      "genres": pa.array([["Animation"], ["Adventure", "Family"]])})
    pq.write_table(table, tmp_path / "catalog.parquet")
    config = CatalogConfig(columns={"id": "title_id", "name": "title"}, poster_root="art", poster_suffix=".png")
    rows = read_catalog(str(tmp_path / "catalog.parquet"), config)
    assert [(r.title_id, r.title, r.genres, r.poster_uri) for r in rows] == [
        ("114709", "Toy Story", ("Animation",), str(tmp_path / "art" / "114709.png")),
        ("113497", "Jumanji", ("Adventure", "Family"), str(tmp_path / "art" / "113497.png"))]


def test_gzipped_csv_is_read_like_plain_csv(tmp_path):
    path = tmp_path / "catalog.csv.gz"
    path.write_bytes(gzip.compress(b"title_id,title,genres,poster_uri\nt1,One,Drama,t1.jpg\n"))
    assert [r.title_id for r in read_catalog(str(path), CatalogConfig())] == ["t1"]


@pytest.mark.parametrize("cell, expected", [
    ("Animation|Adventure|Comedy", ("Animation", "Adventure", "Comedy")),
    ("Drama, Romance", ("Drama", "Romance")),
    ("Drama", ("Drama",)),
    ("Sci-Fi| |Sci-Fi", ("Sci-Fi",)),
    ("", ()),
    (None, ()),
    (float("nan"), ()),
])
def test_split_genres(cell, expected):
    assert split_genres(cell, ["|", ","]) == expected


def test_movie_genre_layout_works_through_a_mapping_only(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    config_file = tmp_path / "movies.yaml"
    config_file.write_text("catalog:\n  columns: {imdbId: title_id, Title: title, Genre: genres}\n"
                           f"  poster_root: {tmp_path / 'SampleMoviePosters'}\n")
    rows = read_catalog(str(tmp_path / "MovieGenre.csv"), load_config(config_file).catalog)

    assert [r.title_id for r in rows] == ["114709", "113497", "211915", "999999"]
    assert rows[0].genres == ("Animation", "Adventure", "Comedy")
    assert rows[1].title == "Girl, Interrupted (1999)"
    assert rows[2].title == "Le fabuleux destin d'Am\ufffdlie Poulain (2001)"  # undecodable byte replaced
    assert rows[3].genres == ()
    assert rows[0].poster_uri == str(tmp_path / "SampleMoviePosters" / "114709.jpg")


def test_a_declared_encoding_decodes_latin1_titles(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    config = CatalogConfig(columns=MOVIE_GENRE_MAPPING, poster_root="posters", encoding="latin-1")
    rows = read_catalog(str(tmp_path / "MovieGenre.csv"), config)
    assert rows[2].title == "Le fabuleux destin d'Amélie Poulain (2001)"


def test_a_manifest_without_title_id_says_how_to_map_one(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    with pytest.raises(CatalogError, match=r"no title_id column .*catalog\.columns"):
        read_catalog(str(tmp_path / "MovieGenre.csv"), CatalogConfig(poster_root="posters"))


def test_a_manifest_without_posters_asks_for_poster_root(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    with pytest.raises(CatalogError, match="catalog.poster_root"):
        read_catalog(str(tmp_path / "MovieGenre.csv"), CatalogConfig(columns=MOVIE_GENRE_MAPPING))


def test_a_mapping_from_a_missing_column_names_it(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,genres,poster_uri\nt1,Drama,a.jpg\n")
    with pytest.raises(CatalogError, match="'Name'"):
        read_catalog(manifest, CatalogConfig(columns={"Name": "title"}))


def test_a_mapping_to_an_unknown_column_names_the_choices(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,genres,poster_uri\nt1,Drama,a.jpg\n")
    with pytest.raises(CatalogError, match="'rating'.*title_id, title, genres, poster_uri"):
        read_catalog(manifest, CatalogConfig(columns={"genres": "rating"}))


def test_an_unknown_manifest_format_is_refused(tmp_path):
    path = tmp_path / "catalog.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(CatalogError, match="cannot tell the manifest format"):
        read_catalog(str(path), CatalogConfig())


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(CatalogError, match="not found: .*nothing.csv"):
        read_catalog(str(tmp_path / "nothing.csv"), CatalogConfig())


def test_read_catalog_transform_yields_every_row(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                   "t0,Zero,Drama,p/0.jpg\n"
                                                   "t1,One,Comedy|Drama,p/1.jpg\n"
                                                   "t2,Two,Horror,gs://bucket/2.jpg\n"
                                                   ",No id,Drama,p/3.jpg\n"
                                                   "t4,Four,,\n")
    with BeamTestPipeline() as pipeline:
        rows = pipeline | ReadCatalog(manifest, CatalogConfig())
        assert_that(rows, equal_to([
            CatalogRow("t0", "Zero", ("Drama",), str(tmp_path / "p" / "0.jpg"), 1),
            CatalogRow("t1", "One", ("Comedy", "Drama"), str(tmp_path / "p" / "1.jpg"), 2),
            CatalogRow("t2", "Two", ("Horror",), "gs://bucket/2.jpg", 3),
            CatalogRow(None, "No id", ("Drama",), str(tmp_path / "p" / "3.jpg"), 4),
            CatalogRow("t4", "Four", (), None, 5),
        ]))
