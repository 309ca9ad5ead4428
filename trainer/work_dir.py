"""The work directory of `posters train`: what a run needs to resume, on local disk or gs://, and only that.

    <work>/_POSTERS_TRAIN_WORK   the marker: this directory was made by `posters train` (refused otherwise when
                                 not empty, so `--work .` never clears a user's files)
           state.json            the run's fingerprint, vocabulary, finished phases and metrics
           phase1/ phase2/       BackupAndRestore checkpoints (`backup/`) and `history.csv`
           logs/                 TensorBoard event files
           phase1.weights.h5 …   a finished phase's weights (deleted when the run finishes)
           cache/                local only: the streamed input's per-genre record files and gs:// shard copies

A fresh start deletes exactly these names (`OWNED`) and nothing else. Keras and TensorFlow write into `local`:
the directory itself when it is local, a temporary mirror when it is gs:// (TensorFlow's own gs:// file system
does not go through `pipelines.common.storage`); `sync()` then uploads what changed and deletes what the trainer
removed, weights before the JSON that points at them. Only the chief owns the work directory: another worker keeps
its checkpoints in a temporary directory of its own, seeded from the chief's (every worker holds the same weights
in synchronous training), and never writes to, or deletes from, the work directory.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from pipelines.common import storage
from trainer.data import TrainingDataError

MARKER = "_POSTERS_TRAIN_WORK"
STATE_FILE = "state.json"
OWNED_DIRS = ("phase1", "phase2", "logs", "cache")
OWNED_FILES = (STATE_FILE, "phase1.weights.h5", "phase2.weights.h5")
LOCAL_ONLY = ("cache",)


class WorkDirError(TrainingDataError):
    """The work directory cannot be used; the message says which one to pass instead."""


class WorkDir:
    """A run's work directory: `uri` (local or gs://) and `local`, the local path Keras and TensorFlow write to."""

    def __init__(self, uri: str, chief: bool = True):
        self.uri = uri.rstrip("/") if storage.is_gcs(uri) else os.path.abspath(uri)
        self.chief = chief
        self.mirrored = storage.is_gcs(uri) or not chief
        self.local = tempfile.mkdtemp(prefix="posters-work-") if self.mirrored else self.uri
        self._synced: dict[str, tuple[int, int]] = {}  # relative path → (size, mtime_ns) as last uploaded

    # --- claiming and clearing -----------------------------------------------------------------------------------

    def claim(self) -> None:
        """Marks the directory as the trainer's; refuses a non-empty directory the trainer did not make."""
        if not self.chief:
            return
        if storage.exists(self._remote(MARKER)):
            return
        foreign = self._remote_entries()
        if foreign:
            raise WorkDirError(f"the work directory {self.uri} is not empty and was not made by posters train (no "
                               f"{MARKER}; it holds e.g. {foreign[0]}): pass --work a new or empty directory")
        storage.write_bytes(self._remote(MARKER), b"posters train work directory\n")

    def clear(self) -> None:
        """Deletes what a run writes here (`OWNED_DIRS`, `OWNED_FILES`), nothing else; the marker stays."""
        for name in OWNED_DIRS:
            shutil.rmtree(os.path.join(self.local, name), ignore_errors=True)
        for name in OWNED_FILES:
            if os.path.exists(os.path.join(self.local, name)):
                os.remove(os.path.join(self.local, name))
        if storage.is_gcs(self.uri) and self.chief:
            for name in OWNED_DIRS:
                storage.delete_objects(storage.list_files(self._remote(name)))
            storage.delete_objects([self._remote(name) for name in OWNED_FILES])
        self._synced = {}

    def _remote(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def _remote_entries(self) -> list[str]:
        if storage.is_gcs(self.uri):
            return [uri[len(self.uri) + 1:] for uri in storage.list_files(self.uri)]
        return sorted(os.listdir(self.uri)) if os.path.isdir(self.uri) else []

    # --- the local mirror ----------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Fills the local mirror from the work directory (gs://, or the chief's for another worker)."""
        if not self.mirrored:
            return
        for uri in storage.list_files(self.uri):
            relative = uri[len(self.uri) + 1:]
            if relative.split("/")[0] in LOCAL_ONLY or not self._owned(relative):
                continue
            path = os.path.join(self.local, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(storage.read_bytes(uri))
            self._synced[relative] = _signature(path)

    def sync(self) -> None:
        """Makes the gs:// work directory equal to the local mirror (the chief's only; a no-op on local disk)."""
        if not (storage.is_gcs(self.uri) and self.chief):
            return
        current = {}
        for root, _, files in os.walk(self.local):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), self.local).replace(os.sep, "/")
                if relative.split("/")[0] not in LOCAL_ONLY and self._owned(relative):
                    current[relative] = _signature(os.path.join(root, name))
        changed = [name for name, signature in current.items() if self._synced.get(name) != signature]
        for relative in sorted(changed, key=lambda name: (name.endswith(".json"), name)):  # JSON (pointers) last
            with open(os.path.join(self.local, relative), "rb") as handle:
                storage.write_bytes(self._remote(relative), handle.read())
        storage.delete_objects([self._remote(name) for name in self._synced if name not in current])
        self._synced = current

    @staticmethod
    def _owned(relative: str) -> bool:
        return relative.split("/")[0] in OWNED_DIRS or relative in OWNED_FILES

    def path(self, *parts: str) -> str:
        """A local path under the work directory (what Keras, TensorFlow and the trainer write)."""
        return os.path.join(self.local, *parts)

    def close(self) -> None:
        """Removes the local mirror (gs://, or another worker's temporary directory)."""
        if self.mirrored:
            shutil.rmtree(self.local, ignore_errors=True)


def _signature(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns
