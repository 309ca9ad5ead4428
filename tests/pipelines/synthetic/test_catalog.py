"""`posters generate-catalog`: the manifest contract, determinism, genre statistics, the deliberately broken
rows, the preview sheet, the CLI entry, and that genre is carried by the pixels."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from pipelines import cli
from pipelines.config import ImageConfig
from pipelines.contracts import CATALOG_COLUMNS, RejectReason
from pipelines.synthetic.art import render_poster
from pipelines.synthetic.catalog import (
    BAD_KIND_EXPECTED,
    BAD_KINDS,
    BAD_ROWS_FILE,
    GENRES,
    MANIFEST_FILE,
    SUMMARY_FILE,
    assign_bad_kinds,
    generate_catalog,
    sample_genres,
)

N = 80
BAD_FRACTION = 0.3  # 24 bad rows: every kind at least twice, so both huge-header variants appear


def read_manifest(out_dir: Path) -> list[dict]:
    with open(out_dir / MANIFEST_FILE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_bad_rows(out_dir: Path) -> dict[str, dict]:
    return {row["title_id"]: row for row in json.loads((out_dir / BAD_ROWS_FILE).read_text())}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("catalog")
    generate_catalog(out_dir, N, seed=11, bad_fraction=BAD_FRACTION, width=120, height=180,
                     preview=out_dir / "preview.png")
    return out_dir


def posters_of_kind(catalog: Path, kind: str) -> list[Path]:
    uris = {row["title_id"]: row["poster_uri"] for row in read_manifest(catalog)}
    paths = [catalog / uris[title_id] for title_id, row in read_bad_rows(catalog).items() if row["kind"] == kind]
    assert paths, f"no {kind} row in the catalog"
    return paths


# --- manifest contract ----------------------------------------------------------------------------------------
def test_manifest_has_the_contract_columns_and_one_row_per_title(catalog):
    with open(catalog / MANIFEST_FILE, newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == CATALOG_COLUMNS
    rows = read_manifest(catalog)
    assert len(rows) == N
    assert len({row["title_id"] for row in rows}) == N
    assert all(row["title_id"].startswith("tt") and row["title"] for row in rows)


def test_every_row_has_one_to_three_distinct_known_genres(catalog):
    for row in read_manifest(catalog):
        genres = row["genres"].split("|")
        assert 1 <= len(genres) <= 3 and len(set(genres)) == len(genres)
        assert set(genres) <= set(GENRES)


def test_poster_uris_are_relative_and_exist_except_missing_files(catalog):
    missing = {t for t, row in read_bad_rows(catalog).items() if row["kind"] == "missing_file"}
    for row in read_manifest(catalog):
        assert not Path(row["poster_uri"]).is_absolute() and row["poster_uri"].startswith("posters/")
        assert (catalog / row["poster_uri"]).exists() == (row["title_id"] not in missing)


def test_good_posters_are_poster_shaped_rgb_jpegs(catalog):
    bad = read_bad_rows(catalog)
    good = [row for row in read_manifest(catalog) if row["title_id"] not in bad]
    for row in good[:10]:
        with Image.open(catalog / row["poster_uri"]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (120, 180))


def test_titles_with_commas_and_quotes_survive_the_csv_round_trip(catalog):
    rows = read_manifest(catalog)
    assert all(None not in row and len(row) == len(CATALOG_COLUMNS) for row in rows)  # no spilled fields
    titles = [row["title"] for row in rows]
    assert any("," in title for title in titles) and any('"' in title for title in titles)


def test_summary_counts_genres_and_bad_kinds(catalog):
    summary = json.loads((catalog / SUMMARY_FILE).read_text())
    rows = read_manifest(catalog)
    assert (summary["n"], summary["seed"]) == (N, 11)
    assert summary["genre_counts"] == {g: sum(g in r["genres"].split("|") for r in rows) for g in GENRES}
    assert summary["bad_counts"] == {kind: sum(r["kind"] == kind for r in read_bad_rows(catalog).values())
                                     for kind in BAD_KINDS}
    assert summary["posters_per_second"] > 0 and summary["elapsed_seconds"] > 0


# --- determinism ----------------------------------------------------------------------------------------------
def catalog_bytes(out_dir: Path) -> dict[str, bytes]:
    files = [out_dir / MANIFEST_FILE, out_dir / BAD_ROWS_FILE, *sorted((out_dir / "posters").iterdir())]
    return {str(path.relative_to(out_dir)): path.read_bytes() for path in files}


def test_same_seed_gives_byte_identical_catalogs(tmp_path):
    for name in ("a", "b"):
        generate_catalog(tmp_path / name, 30, seed=5, bad_fraction=0.4, width=90, height=135)
    assert catalog_bytes(tmp_path / "a") == catalog_bytes(tmp_path / "b")


def test_different_seeds_give_different_catalogs(tmp_path):
    generate_catalog(tmp_path / "a", 30, seed=5, width=90, height=135)
    generate_catalog(tmp_path / "b", 30, seed=6, width=90, height=135)
    a, b = catalog_bytes(tmp_path / "a"), catalog_bytes(tmp_path / "b")
    assert a[MANIFEST_FILE] != b[MANIFEST_FILE]
    assert a["posters/tt0000001.jpg"] != b["posters/tt0000001.jpg"]


# --- genre statistics -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled_genres() -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [sample_genres(rng) for _ in range(4000)]


def test_drama_and_comedy_are_the_most_common_genres(sampled_genres):
    counts = Counter(g for genres in sampled_genres for g in genres)
    assert {genre for genre, _ in counts.most_common(2)} == {"Drama", "Comedy"}
    assert set(counts) == set(GENRES)


def co_occurrence_lift(sampled_genres, a: str, b: str) -> float:
    """P(b | a) / P(b): 1.0 means independent."""
    with_a = [genres for genres in sampled_genres if a in genres]
    p_b_given_a = sum(b in genres for genres in with_a) / len(with_a)
    p_b = sum(b in genres for genres in sampled_genres) / len(sampled_genres)
    return p_b_given_a / p_b


@pytest.mark.parametrize("a, b, min_lift", [
    ("Horror", "Thriller", 2.2), ("Animation", "Family", 2.5), ("War", "History", 2.5), ("Action", "Sci-Fi", 1.8),
    ("Action", "Adventure", 1.5), ("Crime", "Thriller", 1.5), ("Romance", "Comedy", 1.3),
    ("Romance", "Drama", 1.15),  # Drama is so common that no company can lift it much
])
def test_genres_keep_their_usual_company(sampled_genres, a, b, min_lift):
    assert co_occurrence_lift(sampled_genres, a, b) > min_lift


def test_unlikely_pairs_stay_rare(sampled_genres):
    assert co_occurrence_lift(sampled_genres, "Animation", "Horror") < 0.5
    assert co_occurrence_lift(sampled_genres, "Documentary", "Fantasy") < 0.5


# --- deliberately broken rows ---------------------------------------------------------------------------------
def test_bad_kinds_cycle_so_each_appears_once_when_there_is_room():
    kinds = assign_bad_kinds(n=110, bad_fraction=0.1, seed=1)
    assert sorted(Counter(kinds.values()).items()) == sorted((kind, 1) for kind in BAD_KINDS)
    assert assign_bad_kinds(n=110, bad_fraction=0.1, seed=1) == kinds
    assert assign_bad_kinds(n=110, bad_fraction=0.0, seed=1) == {}


def test_bad_rows_sidecar_names_the_contract_outcome_of_every_broken_row(catalog):
    """What the pipelines must do with each broken kind, written out here rather than read from the generator."""
    expected = {
        "zero_byte": RejectReason.ZERO_BYTES,
        "truncated": RejectReason.TRUNCATED_IMAGE,
        "not_an_image": RejectReason.NOT_AN_IMAGE,
        "tiny": RejectReason.TOO_SMALL,
        "huge_header": RejectReason.TOO_MANY_PIXELS,
        "missing_file": RejectReason.NO_POSTER,
        "wrong_extension": "accepted",
        "grayscale": "accepted",
        "cmyk": "accepted",
        "alpha": "accepted",
        "palette": "accepted",
    }
    assert BAD_KIND_EXPECTED == expected
    bad = read_bad_rows(catalog)
    assert len(bad) == round(BAD_FRACTION * N)
    assert {row["kind"] for row in bad.values()} == set(expected)
    for row in bad.values():
        assert row["expected"] == expected[row["kind"]], row


def test_zero_byte_posters_are_empty(catalog):
    assert all(path.stat().st_size == 0 for path in posters_of_kind(catalog, "zero_byte"))


def test_truncated_posters_open_but_fail_to_decode(catalog):
    for path in posters_of_kind(catalog, "truncated"):
        with Image.open(path) as image, pytest.raises(OSError):
            image.load()


def test_not_an_image_posters_are_text_under_a_jpg_name(catalog):
    for path in posters_of_kind(catalog, "not_an_image"):
        assert path.suffix == ".jpg" and path.read_bytes().startswith(b"<!DOCTYPE html>")
        with pytest.raises(UnidentifiedImageError):
            Image.open(path)


def test_tiny_posters_are_under_the_minimum_side(catalog):
    for path in posters_of_kind(catalog, "tiny"):
        with Image.open(path) as image:
            assert max(image.size) < ImageConfig().min_side


def test_huge_header_posters_declare_too_many_pixels_but_are_small_files(catalog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # read the header only; PIL would refuse 30000²
    formats = set()
    for path in posters_of_kind(catalog, "huge_header"):
        with Image.open(path) as image:  # header only: nothing is decoded
            width, height = image.size
            formats.add(image.format)
        assert width * height > ImageConfig().max_pixels
        assert path.stat().st_size < 100_000
    assert formats == {"PNG", "JPEG"}


def test_missing_file_rows_point_at_nothing(catalog):
    assert not any(path.exists() for path in posters_of_kind(catalog, "missing_file"))


@pytest.mark.parametrize("kind, suffix, fmt, mode", [
    ("wrong_extension", ".jpg", "PNG", "RGB"),
    ("grayscale", ".jpg", "JPEG", "L"),
    ("cmyk", ".jpg", "JPEG", "CMYK"),
    ("alpha", ".png", "PNG", "RGBA"),
    ("palette", ".png", "PNG", "P"),
])
def test_convertible_posters_decode_in_their_odd_mode(catalog, kind, suffix, fmt, mode):
    for path in posters_of_kind(catalog, kind):
        with Image.open(path) as image:
            image.load()
            assert (path.suffix, image.format, image.mode) == (suffix, fmt, mode)
            assert image.convert("RGB").size == (120, 180)


def test_alpha_posters_are_partly_transparent(catalog):
    for path in posters_of_kind(catalog, "alpha"):
        with Image.open(path) as image:
            assert image.getchannel("A").getextrema()[0] < 255


# --- preview and CLI ------------------------------------------------------------------------------------------
def test_preview_is_a_contact_sheet_that_opens(catalog):
    with Image.open(catalog / "preview.png") as sheet:
        sheet.load()
        assert sheet.format == "PNG" and sheet.width >= 600 and sheet.height >= 600


def test_cli_entry_writes_a_catalog(tmp_path, capsys):
    out_dir = tmp_path / "cli"
    argv = ["generate-catalog", "--out", str(out_dir), "--n", "12", "--seed", "2", "--bad-fraction", "0.25",
            "--width", "90", "--height", "135", "--preview", str(tmp_path / "sheet.png")]
    assert cli.main(argv) == 0
    assert len(read_manifest(out_dir)) == 12 and len(read_bad_rows(out_dir)) == 3
    assert (tmp_path / "sheet.png").exists()
    assert "posters/s" in capsys.readouterr().out


def test_cli_refuses_impossible_arguments_with_a_message(tmp_path, capsys):
    assert cli.main(["generate-catalog", "--out", str(tmp_path), "--n", "10", "--bad-fraction", "1.5"]) == 2
    assert "--bad-fraction" in capsys.readouterr().err


# --- genre is carried by the pixels ---------------------------------------------------------------------------
def thumbnails(genres: list[str], count: int, seed: int) -> np.ndarray:
    """`count` posters of `genres`, each squeezed to 64×64 as the model sees it, as float RGB in [0, 1]."""
    images = [render_poster(genres, "A Title", np.random.default_rng([seed, i]), 120, 180) for i in range(count)]
    return np.stack([np.asarray(im.resize((64, 64), Image.BILINEAR), np.float32) / 255 for im in images])


def test_horror_posters_are_much_darker_than_comedy_posters():
    horror, comedy = thumbnails(["Horror"], 12, seed=1), thumbnails(["Comedy"], 12, seed=2)
    assert comedy.mean() - horror.mean() > 0.3
    assert horror[..., 0].mean() > horror[..., 2].mean()  # horror's darkness leans red


def test_primary_genre_is_recognisable_from_small_thumbnails():
    """Nearest centroid on 8×8 thumbnails of single-genre posters beats chance (1/21) by far."""
    train = {g: thumbnails([g], 6, seed=10) for g in GENRES}
    test = {g: thumbnails([g], 3, seed=20) for g in GENRES}

    def features(batch):
        return batch.reshape(len(batch), 8, 8, 8, 8, 3).mean(axis=(2, 4)).reshape(len(batch), -1)

    centroids = np.stack([features(train[g]).mean(0) for g in GENRES])
    hits = [int(np.argmin(((features(test[g])[:, None] - centroids) ** 2).sum(-1), axis=1)[i] == k)
            for k, g in enumerate(GENRES) for i in range(3)]
    assert np.mean(hits) > 0.4


def test_duplicate_posters_copy_earlier_unbroken_titles_identically_or_reencoded(tmp_path):
    from pipelines.synthetic.catalog import DUPLICATES_FILE

    summary = generate_catalog(tmp_path, n=20, seed=4, bad_fraction=0.2, width=64, height=96,
                               duplicate_fraction=0.2)
    copies = json.loads((tmp_path / DUPLICATES_FILE).read_text())
    bad = {row["title_id"] for row in json.loads((tmp_path / "bad_rows.json").read_text())}
    assert summary["duplicates"] == len(copies) == 4 and {c["kind"] for c in copies} == {"identical", "reencoded"}
    poster = {p.stem: p.read_bytes() for p in (tmp_path / "posters").iterdir()}
    for copy in copies:
        assert copy["copy_of"] < copy["title_id"] and not {copy["copy_of"], copy["title_id"]} & bad
        assert copy["copy_of"] not in {c["title_id"] for c in copies}
        same = poster[copy["title_id"]] == poster[copy["copy_of"]]
        assert same == (copy["kind"] == "identical")
