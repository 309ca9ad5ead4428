"""ScaNN mechanics behind the `scann` index backend (`index.backend: scann`): one searcher per shard, built,
serialised into one file, loaded and searched.

ScaNN is loaded through its pybind core, never through `import scann`: the `scann` 1.4.2 wheel's package
`__init__` also loads its TensorFlow op library, which was built for TensorFlow 2.20 and fails to load beside
TensorFlow 2.21 (`undefined symbol …absl…`, an error `import scann` lets escape). The core
(`scann/scann_ops/cc/python/scann_pybind.so`) and its config builder (`scann/scann_ops/py/scann_builder.py`,
pure Python) need neither TensorFlow nor the package `__init__`, so both are loaded here from the installed
wheel's files. The same reason rules out TensorFlow-Recommenders' `tfrs.layers.factorized_top_k.ScaNN` layer:
it is a wrapper around the TF op library.

A shard: a partitioning tree (`num_leaves` leaves, trained on the shard's own vectors), anisotropic vector
quantisation (AH, `dims_per_block` dimensions per 4-bit code) scored first, then the best `reorder` candidates
re-scored exactly on the float32 vectors. Search breadth is `leaves_to_search` (the backend's nprobe). Ids are
the shard's row positions; the shard keeps the stable int64 id of each row. ScaNN cannot memory-map its
searcher: every process that loads a shard holds its float32 vectors (dim × 4 bytes a title, 512 MB per
million at 128-d), its AH codes (dim / dims_per_block / 2 bytes a title) and its row → leaf map (4 bytes).

The file of a shard is an uncompressed tar of ScaNN's serialised assets plus `ids.npy`.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import math
import os
import re
import shutil
import tarfile
import tempfile
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np

SCANN_VERSION = "1.4.2"  # the wheel whose file layout this module loads (setup.py pins it: the `scann` extra)
IDS_FILE = "ids.npy"
DATASET_FILE = "dataset.npy"
ASSETS_FILE = "scann_assets.pbtxt"
# A shard this small (or smaller than its tree) is searched exhaustively: a tree needs vectors in every leaf.
BRUTE_FORCE_MAX_VECTORS = 1_000


class ScannUnavailable(RuntimeError):
    """The optional `scann` extra is not installed (or not the version this module loads)."""


@dataclass(frozen=True)
class ScannSettings:
    num_leaves: Optional[int] = None  # per shard; None: about 2·√(shard size), a power of two
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    reorder: int = 100  # candidates re-scored exactly (at least k + 1)
    training_sample_size: Optional[int] = None  # tree training vectors per shard; None: all, at most 100,000


def unavailable_reason() -> Optional[str]:
    """None when the ScaNN core loads here, else why not (one line)."""
    try:
        _core()
    except ScannUnavailable as err:
        return str(err)
    return None


@functools.lru_cache(maxsize=1)
def _core():
    """(scann_pybind, scann_builder) loaded from the installed wheel's files, without the package `__init__`."""
    from importlib import metadata

    try:
        installed = metadata.version("scann")
    except metadata.PackageNotFoundError:
        raise ScannUnavailable("the scann backend needs the optional extra: pip install "
                               f"'poster-similarity[scann]' (scann=={SCANN_VERSION})") from None
    if installed != SCANN_VERSION:
        raise ScannUnavailable(f"scann {installed} is installed; the scann backend loads {SCANN_VERSION}'s core "
                               f"(pip install 'scann=={SCANN_VERSION}')")
    spec = importlib.util.find_spec("scann")  # finds the package without running its __init__
    root = list(spec.submodule_search_locations)[0]
    pybind = _load_file("scann_pybind", os.path.join(root, "scann_ops", "cc", "python", "scann_pybind.so"))
    builder = _load_file("posters_scann_builder", os.path.join(root, "scann_ops", "py", "scann_builder.py"))
    return pybind, builder


def _load_file(name: str, path: str):
    if not os.path.exists(path):
        raise ScannUnavailable(f"{path} is missing: not the scann {SCANN_VERSION} wheel's layout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_num_leaves(n: int) -> int:
    return max(1, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n)))))


def config_for(vectors: np.ndarray, k: int, settings: ScannSettings) -> str:
    """The ScaNN config (text proto) for a shard of these vectors, by ScaNN's own builder."""
    _, builder = _core()
    n = len(vectors)
    config = builder.ScannBuilder(vectors, k, "dot_product")
    leaves = min(settings.num_leaves or default_num_leaves(n), n // 20)
    if n <= BRUTE_FORCE_MAX_VECTORS or leaves < 2:
        return config.score_brute_force().create_config()
    sample = min(n, settings.training_sample_size or 100_000)
    return (config.tree(num_leaves=leaves, num_leaves_to_search=max(1, leaves // 32), training_sample_size=sample)
            .score_ah(settings.dims_per_block, anisotropic_quantization_threshold=settings.anisotropic_threshold)
            .reorder(max(settings.reorder, k))
            .create_config())


class ScannShard:
    """One shard's ScaNN searcher and the stable id of each of its rows; `ntotal`, `d`, `search`, `reconstruct`
    as a faiss index has them, so the sharded index searches either kind."""

    def __init__(self, searcher, ids: np.ndarray, dataset: np.ndarray, config: str, directory: Optional[str] = None):
        self.searcher, self.ids, self._dataset, self.config = searcher, np.asarray(ids, np.int64), dataset, config
        self.d = dataset.shape[1]
        self._order = np.argsort(self.ids, kind="stable")
        self.leaves_to_search: Optional[int] = None
        self.tree = "partitioning" in config
        reorder = re.search(r"approx_num_neighbors:\s*(\d+)", config)
        self.reorder = int(reorder.group(1)) if reorder else 0
        if directory is not None:  # an extracted copy the searcher and the mapped vectors came from
            weakref.finalize(self, shutil.rmtree, directory, True)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores descending, int64 ids; -1 where fewer than k exist)."""
        m = len(queries)
        scores = np.full((m, k), -np.finfo(np.float32).max, np.float32)
        ids = np.full((m, k), -1, np.int64)
        if self.ntotal == 0 or m == 0:
            return scores, ids
        depth = min(k, self.ntotal)
        leaves = self.leaves_to_search if self.tree and self.leaves_to_search else -1
        pre_reorder = max(self.reorder, depth) if self.reorder else -1  # a deep search re-scores deeper
        rows, found = self.searcher.search_batched(np.ascontiguousarray(queries, np.float32), depth, pre_reorder,
                                                   leaves, m > 256, 256)
        rows, found = np.asarray(rows), np.asarray(found, np.float32)
        valid = rows < self.ntotal
        width = rows.shape[1]
        ids[:, :width] = np.where(valid, self.ids[np.minimum(rows, self.ntotal - 1)], -1)
        scores[:, :width] = np.where(valid, found, -np.finfo(np.float32).max)
        return scores, ids

    def reconstruct(self, stable_id: int) -> np.ndarray:
        position = int(np.searchsorted(self.ids, stable_id, sorter=self._order))
        if position >= len(self.ids) or self.ids[self._order[position]] != stable_id:
            raise KeyError(f"id {stable_id} is not in this shard")
        return np.array(self._dataset[self._order[position]], np.float32)


def build_shard(ids: np.ndarray, vectors: np.ndarray, k: int, settings: ScannSettings, dim: int) -> ScannShard:
    """A ScaNN searcher over one shard's vectors (rows in the order given)."""
    pybind, _ = _core()
    vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, dim)
    if len(vectors) == 0:
        return ScannShard(None, np.empty(0, np.int64), vectors, "empty")
    config = config_for(vectors, k, settings)
    return ScannShard(pybind.ScannNumpy(vectors, config, 0), ids, vectors, config)


def serialize(shard: ScannShard) -> bytes:
    """The shard as one file: a tar of ScaNN's assets and the row ids."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="posters-scann-") as directory:
        if shard.searcher is not None:
            shard.searcher.serialize(directory, True)  # relative asset paths: the files can move
        else:
            np.save(os.path.join(directory, DATASET_FILE), shard._dataset)
        np.save(os.path.join(directory, IDS_FILE), shard.ids)
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name in sorted(os.listdir(directory)):
                archive.add(os.path.join(directory, name), arcname=name)
    return buffer.getvalue()


def deserialize(source, dim: int, work_dir: Optional[str] = None) -> ScannShard:
    """A shard from its file's bytes or local path. The assets are extracted to a directory under `work_dir`
    (deleted with the shard); the float32 vectors stay memory-mapped there for `reconstruct`, but the searcher
    reads everything into memory (ScaNN has no memory-mapped mode). Raises ValueError for a file that is not a
    ScaNN shard."""
    pybind, _ = _core()
    directory = tempfile.mkdtemp(prefix="scann-shard-", dir=work_dir)
    try:
        with (tarfile.open(fileobj=io.BytesIO(source), mode="r") if isinstance(source, (bytes, bytearray))
              else tarfile.open(source, mode="r")) as archive:
            archive.extractall(directory, filter="data")
        ids = np.load(os.path.join(directory, IDS_FILE))
        dataset = np.load(os.path.join(directory, DATASET_FILE), mmap_mode="r")
        assets = os.path.join(directory, ASSETS_FILE)
        if not os.path.exists(assets):  # an empty shard
            return ScannShard(None, ids, dataset.reshape(-1, dim), "empty", directory)
        with open(assets) as handle:
            searcher = pybind.ScannNumpy(directory, handle.read())
        config = searcher.config()
    except (tarfile.TarError, OSError, ValueError, RuntimeError) as err:
        shutil.rmtree(directory, ignore_errors=True)
        raise ValueError(f"not a ScaNN shard of this project ({type(err).__name__})") from err
    return ScannShard(searcher, ids, dataset, config, directory)
