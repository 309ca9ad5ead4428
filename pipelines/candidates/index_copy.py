"""The index every candidates worker searches: one verified local copy per machine (`MultiProcessShared` holds
it, so the files are fetched and hashed once per machine, whatever the number of worker processes), memory-mapped
by every process (its pages sit in the page cache once per machine), loaded once per process (`shared.Shared`)."""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Optional

from apache_beam.utils import shared
from apache_beam.utils.multi_process_shared import MultiProcessShared

log = logging.getLogger(__name__)


class IndexCopy:
    """The machine's one verified local copy of an index version."""

    def __init__(self, uri: str):
        from pipelines.index.loader import local_copy

        self._path = local_copy(uri)

    def path(self) -> str:
        return self._path


def index_copy_tag(uri: str) -> str:
    """`MultiProcessShared`'s tag (it names lock files) for the copy of one index version."""
    return "posters-index-copy-" + hashlib.sha256(uri.encode()).hexdigest()[:20]


def open_index(index_handle: shared.Shared, uri: str, model_version: str, faiss_threads: Optional[int] = None):
    """(the machine's copy, this process' memory-mapped index of it); a DoFn's `setup` calls it and keeps both
    for its life: the copy released, the server would drop it and the next setup hash it again."""
    from pipelines.index.loader import load_index

    if faiss_threads:
        import faiss

        faiss.omp_set_num_threads(faiss_threads)
    started = time.time()
    copy = MultiProcessShared(lambda: IndexCopy(uri), tag=index_copy_tag(uri)).acquire()
    path = copy.path()
    index = index_handle.acquire(
        lambda: load_index(path, expected_model_version=model_version, mmap=True, verified=True), tag=path)
    log.info("candidates: index %s (%s) ready in this process after %.1f s", path, index.mode, time.time() - started)
    return copy, index
