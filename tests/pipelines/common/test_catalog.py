"""The one catalog reader: CSV, JSONL and Parquet manifests, column mapping, genre splitting, poster locations."""
import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common.catalog import (
    CatalogError,
    CatalogRow,
    GenreNames,
    ManifestLines,
    ReadCatalog,
    plan_manifest,
    read_catalog,
    read_manifest,
    split_genres,
    total_lines,
)
from pipelines.config import CatalogConfig, ConfigError, load_config
from pipelines.contracts import RejectReason

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
    rows = read_catalog(manifest, CatalogConfig(allowed_roots=[".", "/elsewhere"]))
    assert rows == [
        CatalogRow("t1", "One", ("Drama", "Comedy"), str(tmp_path / "posters" / "t1.jpg"), 1, 2),
        CatalogRow("t2", "Two", ("Horror",), "/elsewhere/t2.png", 2, 3),
        CatalogRow("t3", "Three", ("Drama",), "gs://bucket/t3.jpg", 3, 4, problem=(
            RejectReason.POSTER_OUTSIDE_ROOTS, rows[2].problem[1])),  # configured roots: gs:// is not among them
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
                           f"  poster_root: {tmp_path / 'SampleMoviePosters'}\n  encoding: latin-1\n")
    rows = read_catalog(str(tmp_path / "MovieGenre.csv"), load_config(config_file).catalog)

    assert [r.title_id for r in rows] == ["114709", "113497", "211915", "999999"]
    assert rows[0].genres == ("Animation", "Adventure", "Comedy")
    assert rows[1].title == "Girl, Interrupted (1999)"
    assert rows[2].title == "Le fabuleux destin d'Amélie Poulain (2001)"
    assert rows[3].genres == ()
    assert all(row.problem is None for row in rows)  # https:// posters are not read: poster_root is where they are
    assert rows[0].poster_uri == str(tmp_path / "SampleMoviePosters" / "114709.jpg")


def test_a_declared_encoding_decodes_latin1_titles(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    config = CatalogConfig(columns=MOVIE_GENRE_MAPPING, poster_root="posters", encoding="latin-1")
    rows = read_catalog(str(tmp_path / "MovieGenre.csv"), config)
    assert rows[2].title == "Le fabuleux destin d'Amélie Poulain (2001)"


def test_a_manifest_without_title_id_says_how_to_map_one(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    with pytest.raises(CatalogError, match=r"no title_id column .*catalog\.columns"):
        read_catalog(str(tmp_path / "MovieGenre.csv"), CatalogConfig(poster_root="posters", encoding="latin-1"))


def test_a_manifest_without_posters_asks_for_poster_root(tmp_path):
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    with pytest.raises(CatalogError, match="catalog.poster_root"):
        read_catalog(str(tmp_path / "MovieGenre.csv"), CatalogConfig(columns=MOVIE_GENRE_MAPPING, encoding="latin-1"))


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
        rows, lines = pipeline | ReadCatalog(manifest, CatalogConfig())
        assert_that(rows, equal_to([
            CatalogRow("t0", "Zero", ("Drama",), str(tmp_path / "p" / "0.jpg"), 1, 2),
            CatalogRow("t1", "One", ("Comedy", "Drama"), str(tmp_path / "p" / "1.jpg"), 2, 3),
            CatalogRow("t2", "Two", ("Horror",), "gs://bucket/2.jpg", 3, 4),
            CatalogRow(None, "No id", ("Drama",), str(tmp_path / "p" / "3.jpg"), 4, 5),
            CatalogRow("t4", "Four", (), None, 5, 6),
        ]), label="Rows")
        assert_that(lines, equal_to([ManifestLines(total=6, header=1, blank=0)]), label="Lines")


# --- every physical line accounted for (issue row 5) ----------------------------------------------------------

def sixty_rows_with_an_unbalanced_quote() -> str:
    """60 rows; row 10's title opens a quote it never closes, and row 17 quotes its title properly: a lenient
    CSV reader merges rows 10–17 into one record of the right width, and 7 rows vanish."""
    lines = ["title_id,title,genres,poster_uri\n"]
    for i in range(1, 61):
        title = f"Title {i}"
        if i == 10:
            title = '"Bad title'
        elif i == 17:
            title = '"Say ""Seventeen"""'
        lines.append(f"t{i},{title},Drama,p/{i}.jpg\n")
    return "".join(lines)


def test_an_unbalanced_quote_is_one_malformed_record_and_no_row_vanishes(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", sixty_rows_with_an_unbalanced_quote())
    rows, lines = read_manifest(manifest, CatalogConfig())
    assert len(rows) == 60
    malformed = [row for row in rows if row.problem]
    assert [(row.line_number, row.problem[0]) for row in malformed] == [(11, RejectReason.MALFORMED_RECORD)]
    assert "line 11" in malformed[0].problem[1] and malformed[0].title_id is None
    assert [row.title_id for row in rows if not row.problem] == [f"t{i}" for i in range(1, 61) if i != 10]
    assert next(row for row in rows if row.title_id == "t17").title == 'Say "Seventeen"'
    assert lines == ManifestLines(total=61, header=1, blank=0)
    assert lines.header + lines.blank + sum(row.lines for row in rows) == lines.total


def test_an_unbalanced_quote_at_the_end_and_wrong_field_counts_are_their_own_records(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                   "t1,One,Drama,p/1.jpg\n"
                                                   "t2,Two,Drama\n"
                                                   "\n"
                                                   "t3,Three,Drama,p/3.jpg,extra\n"
                                                   "t4,Four,Drama,p/4.jpg\n"
                                                   't5,"Five,Drama,p/5.jpg\n'
                                                   "t6,Six,Drama,p/6.jpg\n")
    rows, lines = read_manifest(manifest, CatalogConfig())
    assert [(row.title_id, row.line_number, row.problem[0] if row.problem else None) for row in rows] == [
        ("t1", 2, None), (None, 3, RejectReason.MALFORMED_RECORD), (None, 5, RejectReason.MALFORMED_RECORD),
        ("t4", 6, None), (None, 7, RejectReason.MALFORMED_RECORD), ("t6", 8, None)]
    assert "3 fields, the header has 4" in rows[1].problem[1]
    assert lines == ManifestLines(total=8, header=1, blank=1)


def test_a_quoted_cell_with_a_line_break_is_one_record_over_two_lines(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", 'title_id,title,genres,poster_uri\n'
                                                   't1,One,"Drama\nComedy",p/1.jpg\n'
                                                   't2,Two,Horror,p/2.jpg\n')
    rows, lines = read_manifest(manifest, CatalogConfig())
    assert [(row.title_id, row.genres, row.line_number, row.lines) for row in rows] == [
        ("t1", ("Drama", "Comedy"), 2, 2), ("t2", ("Horror",), 4, 1)]
    assert lines == ManifestLines(total=4, header=1, blank=0)


def test_a_jsonl_line_that_is_not_an_object_is_a_malformed_record(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"title_id": "t1", "genres": ["Drama"], "poster_uri": "p/1.jpg"}\n'
                    '{"title_id": "t2", "genres": ["Dra\n'
                    '[1, 2]\n'
                    '\n'
                    '{"title_id": "t3", "genres": ["Drama"], "poster_uri": "p/3.jpg"}\n')
    rows, lines = read_manifest(str(path), CatalogConfig())
    assert [(row.title_id, row.line_number, row.problem[0] if row.problem else None) for row in rows] == [
        ("t1", 1, None), (None, 2, RejectReason.MALFORMED_RECORD), (None, 3, RejectReason.MALFORMED_RECORD),
        ("t3", 5, None)]
    assert lines == ManifestLines(total=5, header=0, blank=1)


# --- genre names (issue row 8) --------------------------------------------------------------------------------

def test_genre_spellings_are_one_genre_each(tmp_path):
    cells = ["Drama", "drama", "Ｄｒａｍａ", "Dra\u200bma", "DRAMA ", "Sci-Fi", "Sci\u2011Fi", "sci \u2013 fi",
             "Drama ; Comedy", "Drama\tComedy", '"Drama\nComedy"', "Comedy|Ｓｃｉ－Ｆｉ", "\u00a0Comedy\u00ad"]
    text = "title_id,title,genres,poster_uri\n" + "".join(
        f"t{i},T,{cell},p/{i}.jpg\n" for i, cell in enumerate(cells))
    rows = read_catalog(write_csv(tmp_path / "catalog.csv", text), CatalogConfig())
    assert {genre for row in rows for genre in row.genres} == {"Drama", "Comedy", "Sci-Fi"}
    assert all(row.genres for row in rows)
    assert rows[9].genres == ("Drama", "Comedy") and rows[10].genres == ("Drama", "Comedy")


def test_the_first_spelling_wins_unless_an_alias_names_one(tmp_path):
    text = ("title_id,title,genres,poster_uri\n"
            "t1,T,sci-fi|film noir,p/1.jpg\n"
            "t2,T,Science Fiction|Film-Noir,p/2.jpg\n"
            "t3,T,SCI-FI|Romcom,p/3.jpg\n")
    config = CatalogConfig(genre_aliases={"science fiction": "Sci-Fi", "ROMCOM": "Romance"})
    rows = read_catalog(write_csv(tmp_path / "catalog.csv", text), config)
    assert [row.genres for row in rows] == [("Sci-Fi", "film noir"), ("Sci-Fi", "Film-Noir"), ("Sci-Fi", "Romance")]
    names = GenreNames({"Sci Fi": "Sci-Fi"})
    assert split_genres("sci fi|SCI‑FI|Drama", ["|"], names) == ("Sci-Fi", "Drama")


def test_genre_aliases_and_separators_are_catalog_settings():
    config = load_config(None, ["catalog.genre_aliases={Romcom: Romance}"])
    assert config.catalog.genre_aliases == {"Romcom": "Romance"} and ";" in config.catalog.genre_separators
    with pytest.raises(ConfigError, match="catalog.genre_separators"):
        load_config(None, ["catalog.genre_separators=['|', '']"])


# --- encodings (issue row 10) ---------------------------------------------------------------------------------

LATIN1_IDS = "title_id,title,genres,poster_uri\ntt_é,One,Drama,p/1.jpg\ntt_è,Two,Drama,p/2.jpg\n".encode("latin-1")


def test_a_manifest_that_is_not_utf8_is_refused_naming_the_file_and_the_setting(tmp_path):
    (tmp_path / "catalog.csv").write_bytes(LATIN1_IDS)
    with pytest.raises(CatalogError) as caught:
        read_catalog(str(tmp_path / "catalog.csv"), CatalogConfig())
    message = str(caught.value)
    assert "\n" not in message and "catalog.csv" in message and "utf-8" in message
    assert "line 2" in message and "catalog.encoding" in message


def test_a_declared_encoding_keeps_distinct_ids_distinct(tmp_path):
    (tmp_path / "catalog.csv").write_bytes(LATIN1_IDS)
    rows = read_catalog(str(tmp_path / "catalog.csv"), CatalogConfig(encoding="latin-1"))
    assert [row.title_id for row in rows] == ["tt_é", "tt_è"]


def test_an_unknown_encoding_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="catalog.encoding is 'latin-9000'"):
        load_config(None, ["catalog.encoding=latin-9000"])


# --- poster roots (issue row 12) ------------------------------------------------------------------------------

def test_posters_outside_the_manifest_directory_are_refused_by_default(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                   "t1,T,Drama,posters/1.jpg\n"
                                                   "t2,T,Drama,../../../etc/passwd\n"
                                                   "t3,T,Drama,/etc/passwd\n"
                                                   "t4,T,Drama,posters/../../outside.jpg\n"
                                                   "t5,T,Drama,gs://any-bucket/5.jpg\n"
                                                   "t6,T,Drama,https://cdn.example.com/6.jpg\n")
    rows = read_catalog(manifest, CatalogConfig())
    refused = {row.title_id for row in rows if row.problem}
    assert refused == {"t2", "t3", "t4", "t6"}
    assert all(row.problem[0] == RejectReason.POSTER_OUTSIDE_ROOTS and "catalog.allowed_roots" in row.problem[1]
               for row in rows if row.problem)
    assert "catalog.allowed_roots (e.g. 'https://cdn.example.com/')" in rows[5].problem[1]  # a URL: its host
    passwd = next(row for row in rows if row.title_id == "t2").poster_uri
    assert passwd.endswith("/etc/passwd") and not passwd.startswith(str(tmp_path))


def test_configured_roots_replace_the_default(tmp_path):
    (tmp_path / "manifests").mkdir()
    manifest = write_csv(tmp_path / "manifests" / "catalog.csv", "title_id,title,genres,poster_uri\n"
                                                                 "t1,T,Drama,../art/1.jpg\n"
                                                                 "t2,T,Drama,2.jpg\n"
                                                                 "t3,T,Drama,gs://mine/posters/3.jpg\n"
                                                                 "t4,T,Drama,gs://mine/other/4.jpg\n")
    config = CatalogConfig(allowed_roots=["../art", "gs://mine/posters"])
    assert [row.title_id for row in read_catalog(manifest, config) if not row.problem] == ["t1", "t3"]


# --- ranges: the manifest read in parallel parts (issue 12) ---------------------------------------------------

TRICKY_CSV = ("\ufefftitle_id,title,genres,poster_uri\r\n"
              "t1,One,\"Drama\nComedy\",p/1.jpg\r\n"
              "\r\n"
              "t2,Two,drama|Horror,p/2.jpg\n"
              't3,"Three,Drama,p/3.jpg\n'
              "t4,Four,DRAMA,p/4.jpg\rt5,Five,Drama\n"
              "t6,\"Six, \"\"quoted\"\"\",Sci\u2011Fi,p/6.jpg\n"
              "t7,Seven,horror,p/7.jpg")


@pytest.mark.parametrize("split_bytes", [1, 40, 90])
def test_a_csv_read_in_ranges_gives_the_rows_and_lines_of_one_read(tmp_path, split_bytes):
    manifest = write_csv(tmp_path / "catalog.csv", TRICKY_CSV)
    assert len(list(plan_manifest(manifest, CatalogConfig(), split_bytes))) > 1
    assert read_manifest(manifest, CatalogConfig(), split_bytes) == read_manifest(manifest, CatalogConfig())


def test_a_range_starts_where_a_record_starts_never_inside_a_quoted_line_break(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", TRICKY_CSV)
    starts = [r.first_line for r in plan_manifest(manifest, CatalogConfig(), 1)]
    assert starts == [2, 4, 5, 6, 7, 8, 9, 10]  # line 3 is inside row t1's quoted genres cell


def test_every_row_keeps_the_first_spelling_of_the_manifest_across_ranges(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", TRICKY_CSV)
    rows, _ = read_manifest(manifest, CatalogConfig(), split_bytes=1)
    assert {genre for row in rows for genre in row.genres} == {"Drama", "Comedy", "Horror", "Sci-Fi"}


def test_unbalanced_quotes_read_in_ranges_lose_no_row(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", sixty_rows_with_an_unbalanced_quote())
    whole = read_manifest(manifest, CatalogConfig())
    assert read_manifest(manifest, CatalogConfig(), split_bytes=100) == whole
    assert whole[1] == ManifestLines(total=61, header=1, blank=0)


def test_jsonl_and_latin1_csv_read_in_ranges_as_in_one_read(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"title_id": "t1", "genres": ["Drama"], "poster_uri": "p/1.jpg"}\n[1]\n\n'
                    + "".join(f'{{"title_id": "t{i}", "genres": "Drama", "poster_uri": "p/{i}.jpg"}}\n'
                              for i in range(2, 9)))
    assert read_manifest(str(path), CatalogConfig(), split_bytes=50) == read_manifest(str(path), CatalogConfig())
    (tmp_path / "MovieGenre.csv").write_bytes(MOVIE_GENRE_CSV)
    config = CatalogConfig(columns=MOVIE_GENRE_MAPPING | {"Poster": "poster_uri"}, encoding="latin-1",
                           allowed_roots=["https://images-na.ssl-images-amazon.com"])
    latin1 = str(tmp_path / "MovieGenre.csv")
    assert len(list(plan_manifest(latin1, config, 60))) == 4
    assert read_manifest(latin1, config, split_bytes=60) == read_manifest(latin1, config)


def test_parquet_is_read_by_row_groups(tmp_path):
    table = pa.table({"title_id": [f"t{i}" for i in range(10)], "genres": [["Drama"]] * 10,
                      "poster_uri": [f"p/{i}.jpg" for i in range(10)]})
    pq.write_table(table, tmp_path / "catalog.parquet", row_group_size=3)
    manifest = str(tmp_path / "catalog.parquet")
    assert len(list(plan_manifest(manifest, CatalogConfig(), 1))) == 4
    assert read_manifest(manifest, CatalogConfig(), split_bytes=1) == read_manifest(manifest, CatalogConfig())


def test_read_catalog_transform_reads_ranges_in_parallel_with_the_rows_of_one_read(tmp_path):
    manifest = write_csv(tmp_path / "catalog.csv", sixty_rows_with_an_unbalanced_quote())
    expected_rows, expected_lines = read_manifest(manifest, CatalogConfig())
    pipeline = BeamTestPipeline()
    rows, lines = pipeline | ReadCatalog(manifest, CatalogConfig(split_bytes=200))
    assert_that(rows, equal_to(expected_rows), label="Rows")
    assert_that(lines | beam.combiners.ToList() | beam.Map(total_lines), equal_to([expected_lines]), label="Lines")
    result = pipeline.run()
    result.wait_until_finish()
    ranges = result.metrics().query(MetricsFilter().with_name("manifest_ranges"))["counters"]
    assert sum(counter.committed for counter in ranges) == 8  # 1,666 bytes of rows cut at record starts every ~200


@pytest.mark.parametrize("split_bytes", [None, 1])
def test_a_byte_that_does_not_decode_is_named_by_its_line_in_any_range(tmp_path, split_bytes):
    rows = b"".join(b"t%d,T,Drama,p/%d.jpg\n" % (i, i) for i in range(1, 4))
    (tmp_path / "catalog.csv").write_bytes(b"title_id,title,genres,poster_uri\n" + rows + b"t4,Am\xe9lie,Drama,p.jpg\n")
    with pytest.raises(CatalogError, match="line 5"):
        read_manifest(str(tmp_path / "catalog.csv"), CatalogConfig(), split_bytes)
