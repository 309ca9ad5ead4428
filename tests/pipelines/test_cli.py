"""The `posters` entry point lists every subcommand, and each subcommand answers --help."""
import os
import re
import subprocess
import sys

import pytest

from pipelines.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_the_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "posters")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(name in result.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help(name, capsys):
    """In this process: the console script is `pipelines.cli:main` (`test_the_console_script_runs` starts it)."""
    try:
        code = main([name, "--help"])
    except SystemExit as exited:  # argparse's --help
        code = exited.code
    assert code in (0, None)
    assert "usage:" in capsys.readouterr().out


def _our_stderr_lines(stderr: str) -> list[str]:
    """stderr's lines: TensorFlow's and absl's start-up lines (`I0000 …`) are not there without --verbose."""
    return [line for line in stderr.splitlines() if line.strip()]


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


# --- start-up noise: off by default, back with --verbose --------------------------------------------------------

_TF_START_UP_LINE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:|WARNING: All log messages before absl::InitializeLog)")


def _posters(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], capture_output=True, text=True,
                          timeout=300, env=env)


def test_help_prints_no_start_up_noise():
    """(A command that loads TensorFlow: `test_a_bad_override_is_one_line_on_stderr_and_no_traceback`.)"""
    result = _posters("--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    assert result.stderr == ""


def test_verbose_brings_the_start_up_logs_back():
    result = _posters("--verbose", "train", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    assert any(_TF_START_UP_LINE.match(line) for line in result.stderr.splitlines()), result.stderr[-2000:]


def test_the_filter_drops_whole_noise_lines_and_passes_the_rest():
    import threading

    from pipelines.cli import _copy_filtered

    written = (b"W0000 00:00:1796127962.919720   20681 port.cc:153] oneDNN custom operations are on.\n"
               b"posters embed: a real error\n"
               b"E0000 00:00:1796128052.684780   22134 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n"
               b"E0000 00:00:1796128052.684780   22134 op_kernel.cc:52] a real kernel error\n"
               b"\rgenerate-catalog: 1/2 posters\rgenerate-catalog: 2/2 posters\nno newline at the end")
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    copier = threading.Thread(target=_copy_filtered, args=(source_read, target_write))
    copier.start()
    os.write(source_write, written)
    os.close(source_write)
    copier.join(timeout=10)
    os.close(target_write)
    with os.fdopen(target_read, "rb") as shown:
        assert shown.read() == (b"posters embed: a real error\n"
                                b"E0000 00:00:1796128052.684780   22134 op_kernel.cc:52] a real kernel error\n"
                                b"\rgenerate-catalog: 1/2 posters\rgenerate-catalog: 2/2 posters\n"
                                b"no newline at the end")
    os.close(source_read)
