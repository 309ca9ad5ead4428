"""Loading a published index and answering top-k queries across its shards.

    index = load_index("gs://bucket/posters/index", expected_model_version=model_meta["model_version"])
    title_ids, scores = index.search(queries, k=10)   # queries: float32 [m, dim], unit-norm

`load_index` follows `CURRENT` (or takes a version directory), verifies every shard and the id map against
the manifest's sha256 and the model version against the caller's, and raises `IndexLoadError` naming the
file when anything is missing or corrupted: a faiss file with one flipped byte loads and answers silently, so
only the checksum can tell. With `mmap=True` the shards' inverted lists are memory-mapped rather than read
into memory (shards on GCS are first copied to a local cache directory, hashed while they stream, so no shard
is ever held whole in memory); `ShardedIndex.mode` records how the shards were opened. `local_copy` makes that
verified local copy once (the candidates pipeline calls it once per machine) and `load_index(copy, mmap=True,
verified=True)` then maps it without hashing it again. The id map is read shard by shard into Arrow arrays
(about 14 bytes a title, not a Python string each).

The manifest records the index's backend (`faiss`, the default of versions before backends, or `scann`);
`load_index` checks it before reading a shard: an unknown backend, one not installed here (ScaNN is an optional
extra) or one other than `expected_backend` is refused with a one-line `IndexLoadError`. ScaNN shards cannot be
memory-mapped: with `mmap=True` their verified local file is extracted under the cache directory and the
searcher reads it into memory (its float32 vectors, for `vector`, stay mapped).
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from typing import Optional

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage, versions
from pipelines.contracts import INDEX_MANIFEST_FILE, INDEX_MANIFEST_KEYS
from pipelines.index import backends
from pipelines.index import faiss_index as vi
from pipelines.index import scann_index as si

_CHUNK = 16 << 20


class IndexLoadError(RuntimeError):
    """A published index that cannot be used as it is: missing or corrupted files, or the wrong model."""


class ShardedIndex:
    """The shards of one index version, searched together; ids come back as title ids."""

    def __init__(self, uri: str, manifest: dict, shards: list[faiss.Index], ids: np.ndarray, title_ids,
                 id_shards: np.ndarray, mode: str = "memory"):
        self.uri, self.manifest, self.shards = uri, manifest, shards
        if not isinstance(title_ids, pa.Array):  # a list or numpy array of title ids
            title_ids = pa.array(list(title_ids), pa.string())
        self._ids, self._title_ids, self._id_shards = ids, title_ids, id_shards  # sorted by id
        self.mode = mode  # "memory": shards read into RAM; "mmap": their codes memory-mapped (faiss IO_FLAG_MMAP)
        self.nprobe = manifest["nprobe"]
        self._shared_coarse_search = _plain_ivf(shards)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, title_id: str) -> bool:
        return self._row(title_id) is not None

    @property
    def title_ids(self) -> list[str]:
        return self._title_ids.to_pylist()

    def set_nprobe(self, nprobe: Optional[int]) -> None:
        """Lists searched per query (IVF); the manifest's value, tuned at build time, is the default."""
        self.nprobe = nprobe

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[list[list[str]], np.ndarray]:
        """Top-k titles per query across all shards: (title ids, cosine scores float32 [m, k], descending).

        Rows with fewer than k results (a catalog smaller than k) are shorter; their scores are -inf there.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
        return self._as_titles(*self.search_ids(queries, k))

    def neighbors(self, title_ids: Sequence[str], k: int = 10) -> tuple[list[list[str]], np.ndarray]:
        """Top-k other titles for titles in the index (item→item), each title itself left out of its row."""
        scores, ids = self.search_ids(self.vectors(title_ids), k + 1)
        own = vi.stable_ids(title_ids)
        columns = np.argsort(ids == own[:, None], axis=1, kind="stable")[:, :k]  # own id moved last, dropped
        return self._as_titles(np.take_along_axis(scores, columns, 1), np.take_along_axis(ids, columns, 1))

    def search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k as (scores, int64 ids; -1 where missing), merged across shards."""
        for shard in self.shards:
            backends.set_breadth(shard, self.nprobe)
        if self._shared_coarse_search:
            # Every shard is a copy of one trained index: assign the queries to lists once, not once per shard.
            first = self.shards[0]
            coarse_scores, lists = first.quantizer.search(queries, first.nprobe)
            parts = [shard.search_preassigned(queries, k, lists, coarse_scores) for shard in self.shards]
        else:
            parts = [vi.search(shard, queries, k) for shard in self.shards]
        return vi.merge_results(parts, k)

    def vector(self, title_id: str) -> np.ndarray:
        """The indexed vector of a title (exact for Flat and IVF-Flat; decoded for compressed indexes)."""
        row = self._row(title_id)
        if row is None:
            raise KeyError(f"title_id {title_id!r} is not in index {self.version}")
        shard = self.shards[self._id_shards[row]]
        ivf = None if isinstance(shard, si.ScannShard) else vi.ivf_of(shard)
        if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return shard.reconstruct(int(self._ids[row]))

    def vectors(self, title_ids: Sequence[str]) -> np.ndarray:
        return np.stack([self.vector(t) for t in title_ids]) if title_ids else np.empty((0, self.dim), np.float32)

    def _as_titles(self, scores: np.ndarray, ids: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return [self._title_ids.take(np.searchsorted(self._ids, row[row >= 0])).to_pylist() for row in ids], scores

    def _row(self, title_id: str) -> Optional[int]:
        wanted = vi.stable_id(title_id)
        row = int(np.searchsorted(self._ids, wanted))
        if row < len(self._ids) and self._ids[row] == wanted and self._title_ids[row].as_py() == title_id:
            return row
        return None


def load_index(uri: str, expected_model_version: Optional[str] = None, mmap: bool = False,
               cache_dir: Optional[str] = None, verified: bool = False,
               expected_backend: Optional[str] = None) -> ShardedIndex:
    """Loads the live version under an index root (via `CURRENT`), or a version directory given directly.

    Raises `IndexLoadError` when a file is missing or does not match the manifest's sha256, or when the index
    was built from another model's embeddings than `expected_model_version`. `verified=True` (with `mmap`, on a
    local directory `local_copy` returned) skips hashing the shards again; the id maps are always checked.
    """
    version_dir = resolve_version_dir(uri)
    manifest = _read_manifest(version_dir)
    if expected_model_version is not None and manifest["model_version"] != expected_model_version:
        raise IndexLoadError(f"index {version_dir} holds embeddings of model {manifest['model_version']!r}, "
                             f"not {expected_model_version!r}; rebuild it with `posters index` from that "
                             "model's embeddings")
    backend = check_backend(version_dir, manifest, expected_backend)
    id_map = _read_id_maps(version_dir, manifest["id_map"])
    shards = [_load_shard(version_dir, entry, manifest["nlist"], mmap, cache_dir, verified, backend, manifest["dim"])
              for entry in manifest["shards"]]
    for entry, shard in zip(manifest["shards"], shards):
        if shard.ntotal != entry["count"] or shard.d != manifest["dim"]:
            raise IndexLoadError(f"{storage.join(version_dir, entry['file'])}: holds {shard.ntotal} vectors of "
                                 f"dimension {shard.d}, the manifest says {entry['count']} of {manifest['dim']}")
    return ShardedIndex(version_dir, manifest, shards, id_map.column("id").to_numpy(),
                        id_map.column("title_id").combine_chunks(), id_map.column("shard").to_numpy(),
                        mode="mmap" if mmap else "memory")


def local_copy(uri: str, cache_dir: Optional[str] = None) -> str:
    """A local, verified copy of the index version `uri` names: the version directory itself when it is local
    (every file hashed once, streamed), else a copy under `cache_dir` of its manifest, id maps and shards,
    each streamed and hashed on the way. Raises `IndexLoadError` like `load_index`."""
    version_dir = resolve_version_dir(uri)
    manifest = _read_manifest(version_dir)
    if not storage.is_gcs(version_dir):
        for entry in manifest["shards"]:
            _load_path(version_dir, entry, cache_dir)
        return version_dir
    local = os.path.join(_cache_root(cache_dir), _version_name(version_dir))
    for entry in manifest["shards"] + _id_map_entries(manifest["id_map"]):
        _load_path(version_dir, entry, cache_dir)
    storage.write_json(os.path.join(local, INDEX_MANIFEST_FILE), manifest)  # last: the copy is complete
    return local


def check_backend(version_dir: str, manifest: dict, expected: Optional[str] = None) -> str:
    """The backend the manifest records (faiss for versions before backends), refused when unknown, not
    installed here, or not `expected`."""
    backend = manifest.get("backend", "faiss")
    if backend not in ("faiss", "scann"):
        raise IndexLoadError(f"index {version_dir} was built with backend {backend!r}, which this version does "
                             "not know (faiss, scann)")
    if expected is not None and backend != expected:
        raise IndexLoadError(f"index {version_dir} was built with backend {backend!r}, not {expected!r}; rebuild "
                             f"it with `posters index --set index.backend={expected}` or load it as {backend}")
    if backend == "scann" and (reason := si.unavailable_reason()):
        raise IndexLoadError(f"index {version_dir} is a ScaNN index, but {reason}")
    return backend


def _id_map_entries(id_map) -> list[dict]:
    return [id_map] if isinstance(id_map, dict) else list(id_map)  # one file: versions before per-shard maps


def _read_id_maps(version_dir: str, id_map) -> pa.Table:
    """Every shard's id map, verified, as one table sorted by id."""
    tables = [pq.read_table(io.BytesIO(_verified_bytes(version_dir, entry))) for entry in _id_map_entries(id_map)]
    table = pa.concat_tables(tables)
    if len(tables) > 1:
        table = table.take(np.argsort(table.column("id").to_numpy(), kind="stable"))
    return table


def resolve_version_dir(uri: str) -> str:
    """The version directory `uri` names: itself when it holds a manifest, else the one its `CURRENT` names."""
    if storage.exists(storage.join(uri, INDEX_MANIFEST_FILE)):
        return uri
    try:
        return versions.current_version_uri(uri)
    except FileNotFoundError as err:
        raise IndexLoadError(f"{uri}: neither an index version (no {INDEX_MANIFEST_FILE}) nor an index root "
                             f"({err}); build one with `posters index`") from err


def _read_manifest(version_dir: str) -> dict:
    path = storage.join(version_dir, INDEX_MANIFEST_FILE)
    if not storage.exists(path):
        raise IndexLoadError(f"{path} is missing: the version directory is incomplete or was deleted")
    manifest = storage.read_json(path)
    missing = [key for key in INDEX_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise IndexLoadError(f"{path} lacks {', '.join(missing)}: not an index manifest of this project")
    return manifest


def _verified_bytes(version_dir: str, entry: dict) -> bytes:
    path = storage.join(version_dir, entry["file"])
    if not storage.exists(path):
        raise IndexLoadError(f"{path} is missing from index version {version_dir}; roll back "
                             "(`posters index rollback`) or rebuild")
    data = storage.read_bytes(path)
    _check_sha256(path, hashlib.sha256(data).hexdigest(), entry["sha256"])
    return data


def _load_shard(version_dir: str, entry: dict, nlist: Optional[int], mmap: bool,
                cache_dir: Optional[str], verified: bool = False, backend: str = "faiss", dim: int = 0):
    if backend == "scann":
        source = (_verified_bytes(version_dir, entry) if not mmap else os.path.join(version_dir, entry["file"])
                  if verified else _load_path(version_dir, entry, cache_dir))
        os.makedirs(_cache_root(cache_dir), exist_ok=True)
        try:
            return si.deserialize(source, dim, _cache_root(cache_dir))
        except ValueError as err:
            raise IndexLoadError(f"{storage.join(version_dir, entry['file'])}: the manifest says backend scann, "
                                 f"but the file is {_one_line(err)}") from err
    if not mmap:
        return _faiss_shard(version_dir, entry, lambda: vi.deserialize(_verified_bytes(version_dir, entry)))
    path = os.path.join(version_dir, entry["file"]) if verified else _load_path(version_dir, entry, cache_dir)
    # IVF: the inverted lists are mapped; Flat, HNSW…: the flat code array is (faiss refuses both flags at once).
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if nlist else faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    return _faiss_shard(version_dir, entry, lambda: faiss.read_index(path, flags))


def _faiss_shard(version_dir: str, entry: dict, read) -> faiss.Index:
    try:
        return read()
    except RuntimeError as err:  # faiss' own message is a C++ assertion: name the file and the backend
        raise IndexLoadError(f"{storage.join(version_dir, entry['file'])}: the manifest says backend faiss, but "
                             f"faiss cannot read the file ({_one_line(err)})") from err


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def _load_path(version_dir: str, entry: dict, cache_dir: Optional[str]) -> str:
    """A local path of the file `entry` names, checked against its sha256: the file itself when local, else a
    copy in the cache directory (reused when its checksum still matches)."""
    path = storage.join(version_dir, entry["file"])
    if storage.is_gcs(path):
        local = os.path.join(_cache_root(cache_dir), _version_name(version_dir), entry["file"])
        if not (os.path.exists(local) and _file_sha256(local) == entry["sha256"]):
            _copy_verified(path, local, entry["sha256"])
        return local
    if not os.path.exists(path):
        raise IndexLoadError(f"{path} is missing from index version {version_dir}; roll back "
                             "(`posters index rollback`) or rebuild")
    _check_sha256(path, _file_sha256(path), entry["sha256"])
    return path


def _copy_verified(source: str, local: str, expected: str) -> None:
    """Streams `source` to `local` in chunks, hashing on the way; the file appears only when it matches."""
    if not storage.exists(source):
        raise IndexLoadError(f"{source} is missing; roll back (`posters index rollback`) or rebuild")
    os.makedirs(os.path.dirname(local), exist_ok=True)
    digest, partial = hashlib.sha256(), f"{local}.partial-{os.getpid()}"
    try:
        with FileSystems.open(source, compression_type="uncompressed") as handle, open(partial, "wb") as out:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        _check_sha256(source, digest.hexdigest(), expected)
        os.replace(partial, local)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _cache_root(cache_dir: Optional[str]) -> str:
    return cache_dir or os.path.join(tempfile.gettempdir(), "posters-index")


def _version_name(version_dir: str) -> str:
    return version_dir.rstrip("/").rsplit("/", 1)[-1]


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: str, found: str, expected: str) -> None:
    if found != expected:
        raise IndexLoadError(f"{path} is corrupted: sha256 {found[:16]}… differs from the manifest's "
                             f"{expected[:16]}…; roll back (`posters index rollback`) or rebuild")


def _plain_ivf(shards: list[faiss.Index]) -> bool:
    """True when every shard is a bare IVF index, so one coarse assignment of the queries serves all shards."""
    return len(shards) > 1 and all(isinstance(shard, faiss.IndexIVF) for shard in shards)
