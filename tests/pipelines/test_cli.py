"""The `posters` entry point lists every subcommand, and each subcommand answers --help."""
import os
import re
import subprocess
import sys

import pytest

from pipelines.cli import CONFIG_FIRST, STEPS, SUBCOMMANDS, check_config_first, command_for, main


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
    """stderr's lines: TensorFlow's and absl's start-up lines (`I0000 …`) are not there without --verbose."""
    return [line for line in stderr.splitlines() if line.strip()]


# Runs `python -m pipelines.cli ARGS` and, at exit, prints on stdout which heavy modules the process imported.
_RUN_CLI_AND_LIST_IMPORTS = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('imported:', [m for m in ('tensorflow', 'apache_beam') if m in sys.modules]))\n"
    "sys.argv[0] = 'posters'\n"
    "runpy.run_module('pipelines.cli', run_name='__main__', alter_sys=True)\n")


@pytest.mark.parametrize("override, expected", [
    ("model.backbone=[oops", "posters embed: --set model.backbone=[oops: the value is not valid YAML: "),
    ("preprocess.read_retries=-1", "posters embed: --set preprocess.read_retries=-1: preprocess.read_retries must "
                                   "be at least 0, got -1"),
])
def test_a_bad_override_is_one_line_on_stderr_and_no_traceback(tmp_path, override, expected):
    """Checked before the command is imported: neither TensorFlow nor Beam is loaded for it."""
    result = subprocess.run([sys.executable, "-c", _RUN_CLI_AND_LIST_IMPORTS, "embed", "--set", override,
                             "--catalog", str(tmp_path / "catalog.csv"), "--model", str(tmp_path / "model"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _our_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "imported: []"


# What each `CONFIG_FIRST` command needs besides the config to get as far as loading it.
_REQUIRED_FLAGS = {"preprocess": ["--catalog", "c.csv", "--out", "out"], "train": ["--data", "d", "--out", "out"],
                   "export-model": ["--out", "out"], "embed": ["--catalog", "c.csv", "--model", "m", "--out", "out"]}


@pytest.mark.parametrize("name", sorted(CONFIG_FIRST))
@pytest.mark.parametrize("flags", [["--set", "preprocess.read_retries=-1"], ["--config", "missing.yaml"],
                                   ["--set=model.backbone=[oops"]])
def test_the_config_checked_first_fails_as_the_command_itself_would(name, flags, tmp_path, monkeypatch, capsys):
    """The CLI's early check gives the line and exit code the command's own config error gives (in this process:
    the command is imported here, and run past the CLI's check)."""
    monkeypatch.chdir(tmp_path)
    argv = [name, *flags, *_REQUIRED_FLAGS[name]]
    checked = check_config_first(argv)
    early = capsys.readouterr().err
    command, rest = command_for(argv)
    try:
        code = command(rest)
    except SystemExit as exited:  # argparse's parser.exit
        code = exited.code
    assert (checked, early) == (code, capsys.readouterr().err) and checked == CONFIG_FIRST[name]
    assert early.startswith(f"posters {name}: ") and len(early.splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["embed", "--set", "preprocess.read_retries=1", "--catalog", "c.csv"],  # a valid config: the command runs
    ["embed", "--set", "preprocess.read_retries=-1", "--help"],  # help wins, as in the command's parser
    ["embed", "--se", "preprocess.read_retries=-1"],  # an abbreviation: the command's parser decides
    ["embed", "--set"],  # no value: the command's parser says so
    ["embed", "publish", "--set", "preprocess.read_retries=-1"],  # a step: its own exit code and prefix
    ["gc", "--set", "preprocess.read_retries=-1"],  # not a TensorFlow command
])
def test_the_early_check_leaves_every_other_line_to_the_command(argv, capsys):
    assert check_config_first(argv) is None
    assert capsys.readouterr().err == ""


# --- start-up noise: off by default, back with --verbose --------------------------------------------------------

_TF_START_UP_LINE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:|WARNING: All log messages before absl::InitializeLog)")


def _posters(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], capture_output=True, text=True,
                          timeout=300, env=env)


def test_help_prints_no_start_up_noise():
    """(A command that loads TensorFlow: `test_verbose_brings_back_the_start_up_logs_the_filter_drops`.)"""
    result = _posters("--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    assert result.stderr == ""


def _filtered(written: bytes) -> bytes:
    """What `_copy_filtered` passes of `written`."""
    import threading

    from pipelines.cli import _copy_filtered

    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    copier = threading.Thread(target=_copy_filtered, args=(source_read, target_write))
    copier.start()
    os.write(source_write, written)
    os.close(source_write)
    copier.join(timeout=10)
    os.close(target_write)
    with os.fdopen(target_read, "rb") as shown:
        passed = shown.read()
    os.close(source_read)
    return passed


def test_verbose_brings_back_the_start_up_logs_the_filter_drops():
    """One TensorFlow start-up (`train --help`): with --verbose its log lines are on stderr, and the filter a run
    without --verbose puts on stderr drops every one of them (without --verbose TensorFlow logs a part of these:
    `TF_CPP_MIN_LOG_LEVEL=2`); `test_stderr_and_its_childrens_go_through_the_filter` checks that such a run's
    stderr, its children's included, goes through the filter."""
    result = _posters("--verbose", "train", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    assert any(_TF_START_UP_LINE.match(line) for line in result.stderr.splitlines()), result.stderr[-2000:]
    assert _filtered(result.stderr.encode()) == b"", result.stderr[-2000:]


def test_stderr_and_its_childrens_go_through_the_filter(capfd):
    from pipelines.cli import start_up_noise_filtered

    noise = "I0000 00:00:1796127962.919720   20681 cpu_feature_guard.cc:210] This TensorFlow binary is optimized"
    with start_up_noise_filtered():
        os.write(2, f"{noise}\nposters: this process's line\n".encode())
        subprocess.run(["sh", "-c", f"printf '%s\\n' '{noise}' 'posters: a child process line' >&2"], check=True)
    assert capfd.readouterr().err == "posters: this process's line\nposters: a child process line\n"


def test_the_filter_drops_whole_noise_lines_and_passes_the_rest():
    written = (b"W0000 00:00:1796127962.919720   20681 port.cc:153] oneDNN custom operations are on.\n"
               b"posters embed: a real error\n"
               b"E0000 00:00:1796128052.684780   22134 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n"
               b"E0000 00:00:1796128052.684780   22134 op_kernel.cc:52] a real kernel error\n"
               b"\rgenerate-catalog: 1/2 posters\rgenerate-catalog: 2/2 posters\nno newline at the end")
    assert _filtered(written) == (b"posters embed: a real error\n"
                                  b"E0000 00:00:1796128052.684780   22134 op_kernel.cc:52] a real kernel error\n"
                                  b"\rgenerate-catalog: 1/2 posters\rgenerate-catalog: 2/2 posters\n"
                                  b"no newline at the end")
