"""The one poster reader and validator, shared by the preprocess and embed pipelines.

`fetch_poster` turns a poster URI into bytes: http(s) URLs through `pipelines.common.http_posters` (conditional
requests, `http.*` settings), anything else through Beam's FileSystems (local or gs://, `read_poster_bytes`) with
retries on transient errors; a missing file is `no_poster`.

`validate_poster` checks the bytes cheaply first (size, header, dimensions) and only then decodes, so a
decompression bomb is refused from its header alone. A poster kept as is (an RGB JPEG or PNG) is decoded by the
model's own decoder (`pipelines.common.pixels.poster_pixels`, TensorFlow; a JPEG at 1/8 scale in the DCT domain,
which still entropy-decodes the whole stream, so truncation and corruption fail as in a full decode). With
`decode=False` the caller decodes kept posters itself, once, with that same function — the embed pipeline's model
handler, batch by batch, feeding the pixels to the model — and turns a poster that fails into the same reject with
`decode_rejection`. Only when TensorFlow refuses a file does PIL decode it too, to tell a truncated or corrupted
file (PIL fails as well: `TRUNCATED_IMAGE`) from one only TensorFlow refuses (`UNDECODABLE_IMAGE`; PIL is laxer: it
does not check PNG chunk CRCs, nor read past the last image data). A poster that is converted is decoded in full
by PIL. Anything wrong raises `PosterRejected` with a `RejectReason` code. `ReadAndValidatePosters` does both inside
a pipeline (fetching `http.concurrency` posters at once per worker process); `WriteRejects` writes the rejects. A
reject's detail describes the file; it never copies the file's bytes.

Posters leave here decodable by `tf.io.decode_image` as RGB: an RGB JPEG or PNG keeps its original bytes;
anything else (grayscale, CMYK, palette, alpha, 16-bit, other formats) is converted to RGB — alpha composited
on white — and re-encoded as a lossless PNG.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from google.api_core import exceptions as google_errors
from PIL import Image

from pipelines.common import http_posters, storage
from pipelines.config import HttpConfig, ImageConfig
from pipelines.contracts import REJECTS_SCHEMA, RejectReason

METRICS_NAMESPACE = "posters"
POSTER_BYTES_READ = "poster_bytes_read"  # the Beam counter of poster bytes read (the stats' key too)
POSTERS_NOT_MODIFIED = "posters_not_modified"  # the Beam counter of 304 answers: posters not downloaded again
# With `conditional`, each context is a dict and this key holds the poster object recorded when the title was last
# read (or None): an http poster whose server answers 304 to it goes to the `not_modified` output.
PREVIOUS_OBJECT = "previous_poster_object"
# Formats PIL may even try to parse; the rest (EPS, which shells out to Ghostscript, PSD, …) are not posters.
# (JPEG covers multi-picture JPEGs too: PIL opens them as format "MPO", which we re-encode.)
POSTER_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
# Formats TensorFlow decodes from the original bytes, when the pixels are already 8-bit RGB.
KEPT_FORMATS = ("JPEG", "PNG")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
WHITE = (255, 255, 255, 255)
# A bytes literal inside an error message (PIL quotes chunk names and markers read from the file): redacted.
_BYTES_LITERAL = re.compile(r"""b(['"]).*?(?<!\\)\1""")
MAX_DETAIL_CHARS = 300
# Lines of a TensorFlow error message around the one that says what went wrong.
_TF_PREAMBLE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "Error in user code")


class PosterRejected(Exception):
    """A poster that cannot be used; `reason` is a `RejectReason` code, `detail` says what was found."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ValidPoster:
    image_bytes: bytes  # encoded, decodable by tf.io.decode_image as RGB
    sha256: str  # of the original file bytes
    width: int
    height: int
    converted_from: str | None  # the original PIL mode when the pixels were converted to RGB ("L", "CMYK", …)


def validate_poster(data: bytes, config: ImageConfig, decode: bool = True) -> ValidPoster:
    """Encoded file bytes → a `ValidPoster`, or `PosterRejected` naming the first check that failed. With
    `decode=False`, a kept poster's pixel data is left for the caller to decode (see the module's docstring)."""
    if not data:
        raise PosterRejected(RejectReason.ZERO_BYTES, "the file is empty")
    if len(data) > config.max_bytes:
        raise PosterRejected(RejectReason.FILE_TOO_LARGE, f"more than image.max_bytes={config.max_bytes} bytes")
    image = _open_header(data)
    width, height = image.size
    if width * height > config.max_pixels:
        raise PosterRejected(RejectReason.TOO_MANY_PIXELS,
                             f"{width}x{height} is more than image.max_pixels={config.max_pixels}")
    if min(width, height) < config.min_side:
        raise PosterRejected(RejectReason.TOO_SMALL, f"{width}x{height} has a side below image.min_side="
                                                     f"{config.min_side}")
    keep = image.mode == "RGB" and image.format in KEPT_FORMATS and "transparency" not in image.info
    if keep:
        if decode:
            _model_decode(data, image, width, height)
        return ValidPoster(data, hashlib.sha256(data).hexdigest(), width, height, converted_from=None)
    _decode_fully(image, width, height)
    sha256 = hashlib.sha256(data).hexdigest()
    converted = _as_rgb(image)
    buffer = io.BytesIO()
    # Fast compression: these bytes are decoded once more downstream, not stored for long.
    converted.save(buffer, format="PNG", compress_level=1)
    return ValidPoster(buffer.getvalue(), sha256, width, height,
                       converted_from=None if image.mode == "RGB" else image.mode)


def decode_rejection(data: bytes, err: Exception) -> PosterRejected:
    """The reject of a poster that `validate_poster(…, decode=False)` passed and the model's decoder then refused
    with `err`: the reject `validate_poster` itself gives such a file."""
    try:
        image = _open_header(data)
        _classify_decode_failure(data, image, *image.size, err)
    except PosterRejected as rejected:
        return rejected
    raise AssertionError("unreachable")


def read_poster_bytes(uri: str, retries: int = 3, max_bytes: int | None = None, backoff_s: float = 0.5) -> bytes:
    """The file's bytes, through Beam's FileSystems; at most `max_bytes + 1` of them when `max_bytes` is given
    (enough for `validate_poster` to see the file is too large without reading all of it).

    Transient errors (I/O and server errors) are retried `retries` times with exponential backoff; a missing
    file is `PosterRejected(NO_POSTER)` at once, a forbidden one `PosterRejected(UNREADABLE)`, and so is the last
    transient error.
    """
    for attempt in range(retries + 1):
        try:
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                return handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except Exception as err:  # noqa: BLE001 — every failure becomes a reject row, none crashes the job
            if not _is_transient(err) or attempt == retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                reason = RejectReason.NO_POSTER if _is_missing(err) else RejectReason.UNREADABLE
                raise PosterRejected(reason, f"{type(err).__name__}{tries}: "
                                             f"{describe_error(err).partition(': ')[2]}") from err
            time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class FetchedPoster:
    data: bytes | None  # None: an http server said the poster has not changed since the previous object (304)
    poster_object: dict | None  # what to record for an http poster (`contracts.POSTER_OBJECT_TYPE`); else None


def fetch_poster(uri: str, http: HttpConfig, retries: int = 3, max_bytes: int | None = None,
                 previous: dict | None = None, roots: Sequence[str] | None = None) -> FetchedPoster:
    """A poster URI → its bytes, the one way every stage reads a poster: http(s) through `http_posters` (a
    conditional request when `previous`, the poster object recorded last time, carries an ETag or Last-Modified;
    redirects only inside `roots`, the catalog's allowed roots, else the poster's own host), anything else through
    `read_poster_bytes` (`retries`, `max_bytes`). Raises `PosterRejected`."""
    if not http_posters.is_http(uri):
        return FetchedPoster(read_poster_bytes(uri, retries, max_bytes=max_bytes), None)
    if previous and previous.get("uri") != uri:  # the catalog moved the poster: another URL's validators mean nothing
        previous = None
    try:
        fetched = http_posters.fetch_http_poster(uri, http, previous, roots)
    except http_posters.HttpPosterFailed as failed:
        raise PosterRejected(failed.reason, failed.detail) from failed
    size = len(fetched.data) if fetched.data is not None else (previous or {}).get("size")
    recorded = {**_EMPTY_OBJECT, "uri": uri, "size": size, "etag": fetched.etag, "last_modified": fetched.last_modified}
    if fetched.data is None:  # a 304 may leave out validators that have not changed
        recorded.update(etag=fetched.etag or previous.get("etag"),
                        last_modified=fetched.last_modified or previous.get("last_modified"))
    return FetchedPoster(fetched.data, recorded)


_EMPTY_OBJECT = {"uri": None, "size": None, "updated": None, "generation": None, "crc32c": None, "md5": None,
                 "etag": None, "last_modified": None}


def same_poster_object(recorded: dict | None, found: dict | None) -> bool:
    """Whether two poster objects describe the same file; a field one of them lacks (written before the field
    existed) counts as null."""
    if recorded is None or found is None:
        return False
    return all(recorded.get(key) == found.get(key) for key in _EMPTY_OBJECT)


def poster_object(uri: str | None) -> dict | None:
    """The poster's object metadata (`contracts.POSTER_OBJECT_TYPE`) without reading its bytes: size and
    modification time from Beam's FileSystems, and on GCS the blob's generation, crc32c and md5 (one metadata
    request). None when it cannot be looked up: the poster is then read, and the read says what is wrong; None
    for an http(s) poster, whose metadata comes with its (conditional) GET."""
    if not uri or http_posters.is_http(uri):
        return None
    try:
        if storage.is_gcs(uri):
            bucket_name, _, name = uri[len("gs://"):].partition("/")
            blob = _gcs_bucket(bucket_name, os.environ.get("STORAGE_EMULATOR_HOST")).get_blob(name)
            if blob is None:
                return None
            return {**_EMPTY_OBJECT, "uri": uri, "size": blob.size,
                    "updated": blob.updated.timestamp() if blob.updated else None,
                    "generation": blob.generation, "crc32c": blob.crc32c, "md5": blob.md5_hash}
        metadata = FileSystems.get_filesystem(uri).metadata(uri)
    except Exception:  # noqa: BLE001 — a poster that cannot be looked up is read, and rejected there if need be
        return None
    return {**_EMPTY_OBJECT, "uri": uri, "size": metadata.size_in_bytes,
            "updated": metadata.last_updated_in_seconds}


@functools.lru_cache(maxsize=16)
def _gcs_bucket(name: str, emulator_host: str | None):
    """One client per process and bucket (and emulator, in tests): a client per poster would cost a handshake."""
    from google.cloud import storage as gcs

    return gcs.Client().bucket(name)


def reject_record(title_id: str | None, uri: str | None, reason: str, detail: str, lines: int = 1) -> dict:
    """One row of `rejects/` (`contracts.REJECTS_SCHEMA`), counted in the Beam metric `rejected_<reason>`.

    `lines` (the manifest lines of the rejected row) rides along for the line accounting; the rejects files
    hold the schema's columns only.
    """
    assert reason in RejectReason.ALL, reason
    Metrics.counter(METRICS_NAMESPACE, f"rejected_{reason}").inc()
    return {"title_id": title_id, "uri": uri, "reason": reason, "detail": detail, "lines": lines}


def describe_error(err: BaseException) -> str:
    """`Type: message` for a reject's detail: one line (for a TensorFlow error, the line that says what went wrong,
    not its "Graph execution error" preamble), bytes literals redacted (a decoder's message may quote bytes of the
    file), at most `MAX_DETAIL_CHARS` characters."""
    message = _meaningful_line(getattr(err, "message", None) or str(err))
    text = f"{type(err).__name__}: {_BYTES_LITERAL.sub('<bytes>', message)}" if message else type(err).__name__
    return text[:MAX_DETAIL_CHARS]


def _meaningful_line(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    for line in lines:
        if not line[0].isspace() and not line.startswith(_TF_PREAMBLE):
            return line.strip()
    return lines[0].strip() if lines else ""


class FetchPostersDoFn(beam.DoFn):
    """A batch of CatalogRows (or (CatalogRow, context) pairs, `with_context`) → (CatalogRow, FetchedPoster[,
    context]) on the main output, reject records on `rejects`, and with `conditional` (CatalogRow,
    FetchedPoster, context) on `not_modified` for an http poster the server says is unchanged (304).

    `http.concurrency` posters are fetched at once by a thread pool (one per process, sharing one connection pool)
    and come out in input order, so at most that many more posters are held than one. The bytes read are counted
    in the Beam metric `poster_bytes_read`, the 304s in `posters_not_modified` (counted here: Beam metrics belong
    to the thread that runs the bundle)."""

    def __init__(self, http: HttpConfig, retries: int, max_bytes: int, with_context: bool = False,
                 conditional: bool = False, roots: Sequence[str] | None = None):
        assert with_context or not conditional, "conditional requests need the context that carries the previous"
        self._http, self._retries, self._max_bytes, self._roots = http, retries, max_bytes, roots
        self._with_context, self._conditional = with_context, conditional
        self._pool = None
        self._bytes_read = Metrics.counter(METRICS_NAMESPACE, POSTER_BYTES_READ)
        self._not_modified = Metrics.counter(METRICS_NAMESPACE, POSTERS_NOT_MODIFIED)

    def setup(self):
        self._pool = ThreadPoolExecutor(self._http.concurrency, thread_name_prefix="fetch-poster")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def process(self, batch):
        pending = collections.deque()
        for element in batch:
            pending.append((element, self._pool.submit(self._fetch, element)))
            if len(pending) > self._http.concurrency:
                yield from self._outputs(*pending.popleft())
        while pending:
            yield from self._outputs(*pending.popleft())

    def _fetch(self, element) -> FetchedPoster | PosterRejected:
        row, context = element if self._with_context else (element, None)
        if not row.poster_uri:
            return PosterRejected(RejectReason.NO_POSTER, f"row {row.row_number} names no poster")
        previous = context.get(PREVIOUS_OBJECT) if self._conditional else None
        try:
            return fetch_poster(row.poster_uri, self._http, self._retries, self._max_bytes, previous, self._roots)
        except PosterRejected as rejected:
            return rejected

    def _outputs(self, element, future):
        row, context = element if self._with_context else (element, None)
        fetched = future.result()
        if isinstance(fetched, PosterRejected):
            yield beam.pvalue.TaggedOutput("rejects", reject_record(
                row.title_id, row.poster_uri, fetched.reason, fetched.detail, row.lines))
        elif fetched.data is None:
            self._not_modified.inc()
            yield beam.pvalue.TaggedOutput("not_modified", (row, fetched, context))
        else:
            self._bytes_read.inc(len(fetched.data))
            yield (row, fetched, context) if self._with_context else (row, fetched)


class ValidatePosterDoFn(beam.DoFn):
    """(CatalogRow, FetchedPoster) → (CatalogRow, ValidPoster) on the main output, or a reject record on `rejects`;
    with `with_context`, (CatalogRow, FetchedPoster, context) → (CatalogRow, ValidPoster, context, poster object
    fetched: `FetchedPoster.poster_object`); `decode` as in `validate_poster`."""

    def __init__(self, config: ImageConfig, with_context: bool = False, decode: bool = True):
        self._config = config
        self._with_context = with_context
        self._decode = decode
        self._accepted = Metrics.counter(METRICS_NAMESPACE, "posters_accepted")
        self._converted = Metrics.counter(METRICS_NAMESPACE, "posters_converted_to_rgb")

    def process(self, element: tuple):
        row, fetched, context = element if self._with_context else (*element, None)
        try:
            poster = validate_poster(fetched.data, self._config, self._decode)
        except PosterRejected as rejected:
            yield beam.pvalue.TaggedOutput("rejects", reject_record(
                row.title_id, row.poster_uri, rejected.reason, rejected.detail, row.lines))
            return
        self._accepted.inc()
        if poster.converted_from:
            self._converted.inc()
        yield (row, poster, context, fetched.poster_object) if self._with_context else (row, poster)


class ReadAndValidatePosters(beam.PTransform):
    """PCollection[CatalogRow] → outputs `posters` (main: (CatalogRow, ValidPoster)) and `rejects` (dicts).

    `posters, rejects = rows | ReadAndValidatePosters(config.image, retries, config.http)`; with `with_context`,
    elements are (CatalogRow, context) and posters (CatalogRow, ValidPoster, context, fetched poster object); with
    `conditional` (contexts are dicts holding `PREVIOUS_OBJECT`) a third output holds the (CatalogRow,
    FetchedPoster, context) of http posters unchanged since then: `posters, rejects, not_modified = …`;
    `decode=False` leaves the decode of kept posters to the caller (`validate_poster`); `roots`
    (`catalog.poster_roots` of the manifest) are where an http poster may redirect to.
    """

    def __init__(self, config: ImageConfig, retries: int = 3, http: HttpConfig | None = None,
                 with_context: bool = False, conditional: bool = False, decode: bool = True,
                 roots: Sequence[str] | None = None):
        super().__init__()
        self._roots = list(roots) if roots is not None else None
        self._config = config
        self._retries = retries
        self._http = http or HttpConfig()
        self._with_context = with_context
        self._conditional = conditional
        self._decode = decode

    def expand(self, rows):
        fetched = (rows
                   | "BatchForFetch" >> beam.BatchElements(min_batch_size=1,
                                                           max_batch_size=4 * self._http.concurrency)
                   | "Fetch" >> beam.ParDo(FetchPostersDoFn(
                       self._http, self._retries, self._config.max_bytes, self._with_context, self._conditional,
                       self._roots))
                   .with_outputs("rejects", "not_modified", main="fetched"))
        validated = fetched.fetched | "Validate" >> beam.ParDo(
            ValidatePosterDoFn(self._config, self._with_context, self._decode)).with_outputs("rejects", main="posters")
        rejects = (fetched.rejects, validated.rejects) | "PosterRejects" >> beam.Flatten()
        if self._conditional:
            return validated.posters, rejects, fetched.not_modified
        return validated.posters, rejects


class WriteRejects(beam.PTransform):
    """Reject records → one Parquet file `<out_dir>/part-00000-of-00001.parquet` with `REJECTS_SCHEMA`.

    One shard: rejects are few and small, and an empty run still writes a file with the schema.
    """

    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, rejects):
        return rejects | "WriteRejectsParquet" >> beam.io.WriteToParquet(
            storage.join(self._out_dir, "part"), schema=REJECTS_SCHEMA, file_name_suffix=".parquet",
            num_shards=1)


def _is_transient(err: Exception) -> bool:
    """Worth another try: I/O hiccups and server-side errors; not a missing, forbidden or malformed file."""
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if isinstance(err, google_errors.GoogleAPICallError):
        return isinstance(err, (google_errors.ServerError, google_errors.TooManyRequests))
    return isinstance(err, OSError)


def _is_missing(err: Exception) -> bool:
    """A file that does not exist (locally, or an object GCS does not have): `no_poster`, not `unreadable`."""
    return isinstance(err, (FileNotFoundError, google_errors.NotFound))


def _open_header(data: bytes) -> Image.Image:
    """Parses the header only (PIL decodes lazily); PIL's own bomb check fires here, before any decoding."""
    try:
        return Image.open(io.BytesIO(data), formats=POSTER_FORMATS)
    except Image.DecompressionBombError as err:
        raise PosterRejected(RejectReason.TOO_MANY_PIXELS, f"header refused by PIL: {err}") from err
    except Image.UnidentifiedImageError as err:
        raise PosterRejected(RejectReason.NOT_AN_IMAGE,
                             f"not a {'/'.join(POSTER_FORMATS)} image ({len(data)} bytes{_looks_like(data)})") from err
    except Exception as err:  # noqa: BLE001 — PIL raises many types for a malformed header
        raise PosterRejected(RejectReason.NOT_AN_IMAGE, f"malformed image header ({describe_error(err)})") from err


def _looks_like(data: bytes) -> str:
    """A hint of what a non-image is, told without quoting it (rejects never copy input bytes)."""
    head = data[:512]
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return ", text: an error page, a script or another text file"
    return ""


@functools.lru_cache(maxsize=1)
def _validation_decoder():
    """One `PixelDecoder` per process, at size 1: a JPEG decodes at 1/8 scale (built on first use)."""
    from pipelines.common.pixels import PixelDecoder

    return PixelDecoder(1)


def _model_decode(data: bytes, image: Image.Image, width: int, height: int) -> None:
    """`PosterRejected` unless the model's decoder (`poster_pixels`) decodes the kept poster `data`."""
    import tensorflow as tf

    try:
        _validation_decoder().decode(data)
    except tf.errors.OpError as err:
        _classify_decode_failure(data, image, width, height, err)


def _classify_decode_failure(data: bytes, image: Image.Image, width: int, height: int, err: Exception) -> None:
    """TensorFlow refused a kept poster: PIL decodes it to say why — `TRUNCATED_IMAGE` when PIL fails too, else
    `UNDECODABLE_IMAGE` (a file only the model's decoder refuses). Always raises."""
    if image.format == "JPEG":  # PIL's verdict at 1/8 scale is a full decode's (tests/pipelines/common)
        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
    _decode_fully(image, width, height)
    raise PosterRejected(RejectReason.UNDECODABLE_IMAGE,
                         f"{image.format} {width}x{height}: PIL reads it but TensorFlow's decoder, which the model "
                         f"uses, refuses it ({describe_error(err)})") from err


def _decode_fully(image: Image.Image, width: int, height: int) -> None:
    """Decodes every byte of pixel data (at the size a `draft` asked for); `width`x`height` as the header says.

    PIL's LOAD_TRUNCATED_IMAGES stays False, so a short file raises here instead of decoding grey padding.
    """
    try:
        image.load()
    except Exception as err:  # noqa: BLE001
        raise PosterRejected(RejectReason.TRUNCATED_IMAGE,
                             f"{image.format} {width}x{height}: the pixel data does not decode in "
                             f"full ({describe_error(err)})") from err


def _as_rgb(image: Image.Image) -> Image.Image:
    """Any mode → 8-bit RGB; transparency is composited on white, 16/32-bit grey is scaled to 8 bits."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        pixels = np.asarray(image).astype(np.int64)
        if pixels.max(initial=0) > 255:  # 16-bit samples
            pixels = pixels >> 8
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise PosterRejected(RejectReason.NOT_AN_IMAGE, f"colour mode {image.mode} cannot be converted to RGB") \
            from err
