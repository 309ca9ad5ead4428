"""A step that records the process it runs in (for the multi_processing test).

In a module of its own: the worker processes unpickle the step by reference to its module and import it, and this
one imports nothing beyond the standard library (not the test module with its readers and fixtures).
"""
from __future__ import annotations

import os


def raw_example_recording_pid(pid_dir: str, raw_example, row, poster):
    """`preprocess._raw_example`, leaving a file named for the process that ran it."""
    open(os.path.join(pid_dir, str(os.getpid())), "w").close()
    return raw_example(row, poster)
