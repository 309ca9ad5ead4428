"""The embed model handler, recording each process that loads the model (for the multi_processing test).

In a module of its own: the worker processes unpickle the handler by reference to its module and import it, and
this one imports only the handler it wraps (not the test module with its model export, benchmark and fixtures).
"""
from __future__ import annotations

import os

from pipelines.embed.model_handler import PosterModelHandler


class PidRecordingHandler(PosterModelHandler):
    """The real model handler, leaving a file named for each process that loads the model."""

    pid_dir = None  # set on the instance, so it travels with the pickled handler to the workers

    def load_model(self):
        open(os.path.join(self.pid_dir, str(os.getpid())), "w").close()
        return super().load_model()


class PidRecordingHandlers:
    """Stands in for `PosterModelHandler` in `embed`: `from_config` gives a `PidRecordingHandler`."""

    def __init__(self, pid_dir: str):
        self.pid_dir = pid_dir

    def from_config(self, model_uri, embed_config, **kwargs):
        handler = PidRecordingHandler.from_config(model_uri, embed_config, **kwargs)
        handler.pid_dir = self.pid_dir
        return handler
