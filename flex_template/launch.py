"""Flex Template entry point: `posters nightly` with the template's parameters (`--date=…`, `--root=…`, …).

The launcher passes the runner options (project, region, temp and staging locations, …) after the template's
parameters; they reach Beam untouched. Without a `config` parameter `configs/dataflow.yaml` is used (the
packaged copy when the working directory has none).
"""
import sys

from pipelines.nightly.chain import main

DEFAULT_CONFIG = "configs/dataflow.yaml"


def nightly_argv(argv: list[str]) -> list[str]:
    has_config = any(arg == "--config" or arg.startswith("--config=") for arg in argv)
    return list(argv) if has_config else ["--config", DEFAULT_CONFIG] + list(argv)


if __name__ == "__main__":
    sys.exit(main(nightly_argv(sys.argv[1:])))
