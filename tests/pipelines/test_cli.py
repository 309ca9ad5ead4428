"""The `posters` entry point lists every subcommand, and each subcommand answers --help."""
import os
import re
import subprocess
import sys

import pytest

from pipelines.cli import STEPS, SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*SUBCOMMANDS, *STEPS]:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_the_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "posters")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(name in result.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted([*SUBCOMMANDS, *STEPS]))
def test_each_subcommand_has_help(name, capsys):
    """In this process: the console script is `pipelines.cli:main` (`test_the_console_script_runs` starts it)."""
    try:
        code = main([*name.split(), "--help"])
    except SystemExit as exited:  # argparse's --help
        code = exited.code
    assert code in (0, None)
    assert "usage:" in capsys.readouterr().out


def _our_stderr_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's and absl's start-up log lines (`I0000 …`, `WARNING: All log messages …`)."""
    noise = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)")
    return [line for line in stderr.splitlines() if line.strip() and not noise.match(line)]


@pytest.mark.parametrize("override, expected", [
    ("model.backbone=[oops", "posters embed: --set model.backbone=[oops: the value is not valid YAML: "),
    ("preprocess.read_retries=-1", "posters embed: --set preprocess.read_retries=-1: preprocess.read_retries must "
                                   "be at least 0, got -1"),
])
def test_a_bad_override_is_one_line_on_stderr_and_no_traceback(tmp_path, override, expected):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "embed", "--set", override,
                             "--catalog", str(tmp_path / "catalog.csv"), "--model", str(tmp_path / "model"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _our_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
