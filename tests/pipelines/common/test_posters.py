"""The one poster reader and validator: every reject reason, the RGB conversions, retries, and the Beam parts."""
import functools
import hashlib
import io
import struct

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.common.catalog import CatalogRow
from pipelines.common.pixels import PixelDecoder
from pipelines.common.posters import (
    PosterRejected,
    ReadAndValidatePosters,
    WriteRejects,
    decode_rejection,
    poster_object,
    read_poster_bytes,
    reject_record,
    validate_poster,
)
from pipelines.config import ImageConfig
from pipelines.contracts import REJECTS_SCHEMA, RejectReason
from pipelines.synthetic.catalog import jpeg_declaring, png_declaring

CONFIG = ImageConfig(min_side=32, max_pixels=1_000_000, max_bytes=1_000_000)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def poster(mode: str = "RGB", size=(40, 60), colour=(200, 30, 60)) -> Image.Image:
    """A two-tone poster: the left half `colour`, the right half dark, so conversions can be checked per pixel."""
    image = Image.new("RGB", size, colour)
    image.paste((10, 10, 10), (size[0] // 2, 0, size[0], size[1]))
    return image.convert(mode) if mode != "RGB" else image


def tf_pixels(data: bytes) -> np.ndarray:
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


@functools.cache
def pixel_decoder(size: int) -> PixelDecoder:
    """One `PixelDecoder` per input size for the whole module, as the embed handler holds one per process: its
    traced functions are built once, not once per poster."""
    return PixelDecoder(size)


def validated(data: bytes, config: ImageConfig = CONFIG, pixel_size: int | None = None):
    """`validate_poster` as preprocess calls it (pixel_size None: it decodes), or as the embed pipeline does: without
    the decode, then the model handler's one decode at the model's input size, a refusal turned into the reject by
    `decode_rejection`."""
    if pixel_size is None:
        return validate_poster(data, config)
    valid = validate_poster(data, config, decode=False)
    try:
        pixel_decoder(pixel_size).decode(valid.image_bytes)
    except tf.errors.OpError as err:
        raise decode_rejection(valid.image_bytes, err) from err
    return valid


def rejection(data: bytes, config: ImageConfig = CONFIG, pixel_size: int | None = None) -> PosterRejected:
    with pytest.raises(PosterRejected) as caught:
        validated(data, config, pixel_size)
    return caught.value


# Validation with its decode (preprocess), and without it, the decode left to the embed model handler: the same
# verdicts.
PIXEL_SIZES = pytest.mark.parametrize("pixel_size", [None, 32])


# --- validate_poster: kept, converted ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_rgb_jpeg_and_png_keep_their_original_bytes(fmt):
    data = encoded(poster(), fmt)
    valid = validate_poster(data, CONFIG)
    assert valid.image_bytes == data
    assert (valid.sha256, valid.width, valid.height, valid.converted_from) == (
        hashlib.sha256(data).hexdigest(), 40, 60, None)


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("LA", "PNG"),
                                       ("RGBA", "PNG"), ("1", "PNG"), ("L", "PNG")])
def test_other_modes_are_converted_to_an_rgb_png_tensorflow_decodes(mode, fmt):
    data = encoded(poster(mode), fmt)
    valid = validate_poster(data, CONFIG)
    assert valid.converted_from == mode
    assert valid.sha256 == hashlib.sha256(data).hexdigest()  # of the original file, not the re-encoding
    assert Image.open(io.BytesIO(valid.image_bytes)).format == "PNG"
    pixels = tf_pixels(valid.image_bytes)
    assert pixels.shape == (60, 40, 3)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (40, 60), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, 20, 60))  # left half fully transparent blue
    image.paste((0, 0, 0, 128), (0, 30, 20, 60))  # bottom-left quarter half-transparent black
    pixels = tf_pixels(validate_poster(encoded(image, "PNG"), CONFIG).image_bytes)
    assert pixels[10, 10].tolist() == [255, 255, 255]
    assert pixels[10, 30].tolist() == [255, 0, 0]
    assert all(abs(v - 127) <= 1 for v in pixels[45, 10].tolist())


def test_palette_with_a_transparent_index_is_composited_on_white():
    image = poster("P")
    pixels = tf_pixels(validate_poster(encoded(image, "PNG", transparency=image.getpixel((0, 0))), CONFIG).image_bytes)
    assert pixels[5, 5].tolist() == [255, 255, 255]


def test_16_bit_greyscale_is_scaled_to_8_bits():
    samples = np.full((60, 40), 65535, np.uint16)
    samples[:, 20:] = 256 * 100
    data = encoded(Image.fromarray(samples), "PNG")
    valid = validate_poster(data, CONFIG)
    pixels = tf_pixels(valid.image_bytes)
    assert valid.converted_from.startswith("I")
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[0, 30].tolist() == [100, 100, 100]


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "GIF", "TIFF"])
def test_other_formats_are_re_encoded_as_png(fmt):
    valid = validate_poster(encoded(poster(), fmt), CONFIG)
    assert Image.open(io.BytesIO(valid.image_bytes)).format == "PNG"
    assert tf_pixels(valid.image_bytes).shape == (60, 40, 3)


def test_a_png_named_jpg_is_judged_by_its_content():
    assert validate_poster(encoded(poster(), "PNG"), CONFIG).converted_from is None


# --- validate_poster: rejects ---------------------------------------------------------------------------------

def test_zero_bytes():
    assert rejection(b"").reason == RejectReason.ZERO_BYTES


def test_file_too_large():
    data = encoded(poster(size=(200, 300)), "PNG")
    assert rejection(data, ImageConfig(max_bytes=len(data) - 1)).reason == RejectReason.FILE_TOO_LARGE


@pytest.mark.parametrize("data", [b"<!DOCTYPE html><html>404</html>", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"\x00" * 64])
def test_not_an_image(data):
    rejected = rejection(data)
    assert rejected.reason == RejectReason.NOT_AN_IMAGE
    assert f"{len(data)} bytes" in rejected.detail


PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.mark.parametrize("data", [PASSWD, b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"secret-token-1234",
                                  b"\xff\xd8\xff\xe0secret-token-1234"])
def test_a_reject_detail_never_copies_the_files_bytes(data):
    """A file that is not a poster (a uri pointing at /etc/passwd) is rejected; what it holds stays out of
    rejects/, and so do bytes a decoder's message would quote."""
    detail = rejection(data).detail
    assert "root:x" not in detail and "secret" not in detail and "IHDR" not in detail
    for start in range(0, len(data) - 6):
        assert repr(data[start:start + 6])[2:-1] not in detail


@PIXEL_SIZES
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt, pixel_size):
    data = encoded(poster(size=(120, 180)), fmt)
    rejected = rejection(data[:len(data) // 2], pixel_size=pixel_size)
    assert rejected.reason == RejectReason.TRUNCATED_IMAGE and "120x180" in rejected.detail


def noisy_jpeg(progressive: bool = False) -> bytes:
    """A 300×450 JPEG of noise: a long entropy-coded stream, so bytes in its middle are pixel data."""
    pixels = np.random.default_rng(7).integers(0, 256, (450, 300, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels), "JPEG", quality=90, progressive=progressive)


def full_decode_fails(data: bytes) -> bool:
    """What PIL's full-resolution decode says, as the reference for the cheaper (1/8 scale) validation decode."""
    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001
        return True
    return False


@PIXEL_SIZES
@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_corrupted_in_the_middle_is_rejected(progressive, pixel_size):
    """Bytes overwritten (not cut off) in the middle of the scan data: a full decode fails, so must validation."""
    data = bytearray(noisy_jpeg(progressive))
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    assert full_decode_fails(bytes(data))
    rejected = rejection(bytes(data), pixel_size=pixel_size)
    assert rejected.reason == RejectReason.TRUNCATED_IMAGE and "300x450" in rejected.detail


@pytest.mark.parametrize(("progressive", "pixel_size"), [(False, None), (True, None), (False, 64), (True, 128)])
def test_jpeg_validation_rejects_exactly_what_a_full_decode_rejects(progressive, pixel_size):
    """Kept JPEGs are validated by a DCT-scaled decode (1/8 in the validator; 1/4 and 1/2 in the embed handler's
    decode at these input sizes of a 300×450 poster); over many corruptions it rejects the same files a full decode
    does."""
    original = noisy_jpeg(progressive)
    rng = np.random.default_rng(11)
    outcomes = set()
    for trial in range(80):
        data = bytearray(original)
        start = int(rng.integers(len(data) // 4, 3 * len(data) // 4))
        length = int(rng.choice([1, 8, 64, 512]))
        kind = trial % 4
        if kind == 0:
            data[start:start + length] = b"\xff" * length
        elif kind == 1:
            data[start:start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        elif kind == 2:
            del data[start:start + length]
        else:
            data = data[:start]
        expected_rejected = full_decode_fails(bytes(data))
        try:
            validated(bytes(data), CONFIG, pixel_size)
            rejected = False
        except PosterRejected:
            rejected = True
        assert rejected == expected_rejected, (trial, start, length)
        outcomes.add(rejected)
    assert outcomes == {True, False}  # the corruptions exercised both answers


def with_bad_idat_crc(png: bytes) -> bytes:
    """`png` with one bit of its first IDAT chunk's CRC flipped: PIL decodes it, TensorFlow refuses it."""
    at = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[at:at + 4])[0]
    crc_at = at + 8 + length
    return png[:crc_at] + bytes([png[crc_at] ^ 0x01]) + png[crc_at + 1:]


@PIXEL_SIZES
def test_a_png_with_a_wrong_idat_crc_is_rejected_as_the_model_cannot_decode_it(pixel_size):
    data = with_bad_idat_crc(encoded(poster(), "PNG"))
    Image.open(io.BytesIO(data)).load()  # PIL does not check the CRC
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf_pixels(data)  # the model's decoder does
    rejected = rejection(data, pixel_size=pixel_size)
    assert rejected.reason == RejectReason.UNDECODABLE_IMAGE and "PNG 40x60" in rejected.detail


@PIXEL_SIZES
def test_a_png_cut_after_its_image_data_is_rejected_as_the_model_cannot_decode_it(pixel_size):
    """PIL stops reading at the last image data; TensorFlow reads on to the end chunk and refuses a file without
    one."""
    data = encoded(poster(), "PNG")
    data = data[:data.index(b"IEND") - 4]
    Image.open(io.BytesIO(data)).load()
    assert rejection(data, pixel_size=pixel_size).reason == RejectReason.UNDECODABLE_IMAGE


def test_too_many_pixels_is_refused_from_the_header_alone():
    """The PNG declares 2000×2000 but holds one row: decoding it would fail, so only the header was read."""
    rejected = rejection(png_declaring(2000, 2000))
    assert rejected.reason == RejectReason.TOO_MANY_PIXELS and "2000x2000" in rejected.detail


def test_a_jpeg_declaring_too_many_pixels_is_refused():
    rejected = rejection(jpeg_declaring(encoded(poster(), "JPEG"), 3000, 3000))
    assert rejected.reason == RejectReason.TOO_MANY_PIXELS


def test_pils_own_decompression_bomb_check_is_a_too_many_pixels_reject():
    """30000×30000 is past PIL's own limit (2 × 89M pixels), which raises inside Image.open; a lax max_pixels
    does not let it through."""
    rejected = rejection(png_declaring(30000, 30000), ImageConfig(max_pixels=10 ** 10))
    assert rejected.reason == RejectReason.TOO_MANY_PIXELS


def test_too_small():
    rejected = rejection(encoded(poster(size=(31, 200)), "JPEG"))
    assert rejected.reason == RejectReason.TOO_SMALL and "31x200" in rejected.detail


# --- read_poster_bytes ------------------------------------------------------------------------------------------

class FlakyFileSystem(LocalFileSystem):
    """`flaky:///path`: the local file, after `failures[path]` opens that fail like a dropped connection."""

    failures: dict[str, int] = {}

    @classmethod
    def scheme(cls):
        return "flaky"

    def open(self, path, *args, **kwargs):
        local = path[len("flaky://"):]
        if self.failures.get(local, 0) > 0:
            self.failures[local] -= 1
            raise ConnectionResetError("connection reset by peer")
        return super().open(local, *args, **kwargs)


def test_read_poster_bytes_retries_transient_errors(tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(b"poster")
    FlakyFileSystem.failures[str(path)] = 2
    assert read_poster_bytes(f"flaky://{path}", retries=2, backoff_s=0) == b"poster"
    assert FlakyFileSystem.failures[str(path)] == 0


def test_read_poster_bytes_gives_up_after_the_last_retry(tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(b"poster")
    FlakyFileSystem.failures[str(path)] = 5
    with pytest.raises(PosterRejected, match="ConnectionResetError after 3 attempts") as caught:
        read_poster_bytes(f"flaky://{path}", retries=2, backoff_s=0)
    assert caught.value.reason == RejectReason.UNREADABLE
    assert FlakyFileSystem.failures[str(path)] == 2


def test_a_missing_file_is_no_poster_without_retrying(tmp_path):
    with pytest.raises(PosterRejected, match=r"^no_poster: FileNotFoundError: ") as caught:
        read_poster_bytes(str(tmp_path / "missing.jpg"), retries=3, backoff_s=60)
    assert caught.value.reason == RejectReason.NO_POSTER


def test_a_file_that_cannot_be_opened_is_unreadable(tmp_path):
    with pytest.raises(PosterRejected, match=r"^unreadable: IsADirectoryError: ") as caught:
        read_poster_bytes(str(tmp_path), retries=3, backoff_s=60)
    assert caught.value.reason == RejectReason.UNREADABLE


def test_read_poster_bytes_stops_one_byte_past_max_bytes(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(1000))
    assert len(read_poster_bytes(str(path), max_bytes=100)) == 101


def test_posters_are_read_from_gcs(gcs_emulator):
    data = encoded(poster(), "JPEG")
    gcs_emulator.client.bucket(gcs_emulator.bucket).blob("posters/p.jpg").upload_from_string(data)
    assert read_poster_bytes(gcs_emulator.uri("posters/p.jpg")) == data
    with pytest.raises(PosterRejected) as caught:
        read_poster_bytes(gcs_emulator.uri("posters/missing.jpg"), backoff_s=0)
    assert caught.value.reason == RejectReason.NO_POSTER


def test_poster_object_metadata_is_looked_up_without_reading_the_file(tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(encoded(poster(), "JPEG"))
    found = poster_object(str(path))
    assert (found["uri"], found["size"], found["updated"]) == (str(path), path.stat().st_size, path.stat().st_mtime)
    assert poster_object(str(tmp_path / "missing.jpg")) is None and poster_object(None) is None


def test_a_gcs_poster_object_carries_its_generation_and_checksums(fake_gcs):
    blob = fake_gcs.client.bucket(fake_gcs.bucket).blob("posters/p.jpg")
    blob.upload_from_string(encoded(poster(), "JPEG"))
    first = poster_object(fake_gcs.uri("posters/p.jpg"))
    assert first["size"] == len(encoded(poster(), "JPEG")) and first["generation"] and first["crc32c"]
    blob.upload_from_string(encoded(poster(), "PNG"))
    second = poster_object(fake_gcs.uri("posters/p.jpg"))
    assert second["generation"] != first["generation"] and second["crc32c"] != first["crc32c"]
    assert poster_object(fake_gcs.uri("posters/missing.jpg")) is None


# --- the Beam parts -------------------------------------------------------------------------------------------

def test_read_and_validate_posters_splits_posters_from_rejects(tmp_path):
    (tmp_path / "good.jpg").write_bytes(encoded(poster(), "JPEG"))
    (tmp_path / "grey.png").write_bytes(encoded(poster("L"), "PNG"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    rows = [CatalogRow("good", "", ("Drama",), str(tmp_path / "good.jpg"), 1),
            CatalogRow("grey", "", ("Drama",), str(tmp_path / "grey.png"), 2),
            CatalogRow("empty", "", ("Drama",), str(tmp_path / "empty.jpg"), 3),
            CatalogRow("gone", "", ("Drama",), str(tmp_path / "gone.jpg"), 4),
            CatalogRow("none", "", ("Drama",), None, 5)]
    pipeline = BeamTestPipeline()
    posters, rejects = pipeline | beam.Create(rows) | ReadAndValidatePosters(CONFIG, retries=0)
    assert_that(posters | "Ids" >> beam.MapTuple(lambda row, valid: (row.title_id, valid.converted_from)),
                equal_to([("good", None), ("grey", "L")]), label="Posters")
    assert_that(rejects | "Reasons" >> beam.Map(lambda r: (r["title_id"], r["reason"])),
                equal_to([("empty", RejectReason.ZERO_BYTES), ("gone", RejectReason.NO_POSTER),
                          ("none", RejectReason.NO_POSTER)]), label="Rejects")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters["rejected_zero_bytes"] == 1 and counters["posters_accepted"] == 2


@pytest.mark.parametrize("count", [0, 3])
def test_write_rejects_writes_parquet_with_the_rejects_schema(tmp_path, count):
    rejects = [reject_record(f"t{i}", f"/p/{i}.jpg", RejectReason.ZERO_BYTES, "the file is empty", lines=2)
               for i in range(count)]
    with BeamTestPipeline() as pipeline:
        _ = pipeline | beam.Create(rejects, reshuffle=False) | WriteRejects(str(tmp_path / "rejects"))
    table = pq.read_table(tmp_path / "rejects")
    assert table.schema.equals(REJECTS_SCHEMA)  # `lines` rides along for the counts only
    assert sorted(table.to_pylist(), key=lambda r: r["title_id"]) == [
        {key: reject[key] for key in REJECTS_SCHEMA.names} for reject in rejects]
