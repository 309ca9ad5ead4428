"""The sdist that Dataflow workers install (`--setup_file=./setup.py`) holds every module the pipelines and the
trainer import, and the configs; installed from that sdist, the package has them too."""
import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("pipelines", "trainer", "configs")
# "pipelines.embed.pipeline:main" in cli.py, "pipelines.preprocess.pipeline" handed to importlib: imports by name.
DOTTED_NAME = re.compile(r"^(?:pipelines|trainer)(?:\.\w+)+(?::\w+)?$")
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".venv-airflow", "build", "dist", "*.egg-info", "__pycache__",
                                    "demo_out", "bench_out", ".pytest_cache")


def _module_file(module: str) -> str | None:
    """`pipelines.embed.pipeline` → `pipelines/embed/pipeline.py`, or a package's `__init__.py`; None when neither
    exists."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(REPO).as_posix()
    return None


def _imported_modules(path: Path) -> tuple[set[str], set[str]]:
    """(modules that must exist, names that are modules only if such a file exists) our code imports in `path`."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    modules, maybe_modules = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            modules.add(base)
            maybe_modules.update(f"{base}.{alias.name}" for alias in node.names)  # `from pipelines import storage`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_NAME.match(node.value):
            modules.add(node.value.split(":")[0])
    ours = lambda names: {m for m in names if m.split(".")[0] in OUR_PACKAGES}  # noqa: E731
    return ours(modules), ours(maybe_modules)


@functools.cache  # three tests ask; the walk parses every source file
def required_files() -> frozenset[str]:
    """Every module file our packages import (directly or by name) and the packages above them, plus every
    module of `pipelines/` and `trainer/`, the configs and setup.py."""
    required = {"setup.py"} | {p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*.yaml")}
    for package in ("pipelines", "trainer"):
        for path in sorted((REPO / package).rglob("*.py")):
            required.add(path.relative_to(REPO).as_posix())
            modules, maybe_modules = _imported_modules(path)
            broken = sorted(m for m in modules if _module_file(m) is None)
            assert not broken, f"{path.relative_to(REPO)} imports {broken}, which the source tree does not have"
            for module in modules | {m for m in maybe_modules if _module_file(m)}:
                parts = module.split(".")
                required.update(_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return frozenset(required)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist built from a copy of the tree (the build writes egg-info, which must not land in the repo)."""
    work = tmp_path_factory.mktemp("sdist")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(work / "dist")],
                            cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (archive,) = (work / "dist").glob("*.tar.gz")
    return archive


def test_the_sdist_holds_every_imported_module_and_every_config(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = sorted(required_files() - names)
    assert not missing, f"the sdist lacks {missing}: add them to setup.py's packages/package_data or MANIFEST.in"


def test_installing_the_sdist_installs_the_modules_and_configs_the_workers_load(sdist, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(target), str(sdist)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    missing = sorted(required_files() - {"setup.py"} - installed)
    assert not missing, f"installing the sdist does not install {missing}"


def test_the_import_walk_sees_imports_by_name_and_relative_imports():
    """The walk must not miss what cli.py loads with importlib, or the check would pass vacuously."""
    files = required_files()
    assert {"pipelines/nightly/chain.py", "pipelines/candidates/pipeline.py", "pipelines/similar/contact_sheets.py",
            "configs/local.yaml", "configs/dataflow.yaml"} <= files
    assert "pipelines.nightly.chain" in _imported_modules(REPO / "pipelines" / "cli.py")[0]
