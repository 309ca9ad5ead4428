"""The import graph reads like the README's diagram: stages on top, shared parts below, one direction only."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "embed", "index", "candidates", "nightly", "similar", "evaluate")
# Where a stage may reach into another: the data flows downstream (index reads what embed wrote, …).
UPSTREAM = {"preprocess": set(), "embed": set(), "index": {"embed"}, "candidates": {"embed", "index"},
            "nightly": {"embed", "index", "candidates", "evaluate"}, "similar": {"embed", "index", "candidates"},
            "evaluate": {"embed", "index", "candidates"}}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(package: str):
    return sorted((REPO / package).rglob("*.py"))


def test_nothing_in_pipelines_imports_the_trainer():
    offenders = {str(p.relative_to(REPO)): sorted(n for n in imports_of(p) if n.split(".")[0] == "trainer")
                 for p in modules("pipelines")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_trainer_uses_only_the_shared_parts_of_pipelines():
    allowed = ("pipelines.common", "pipelines.config", "pipelines.contracts")
    offenders = {str(p.relative_to(REPO)): sorted(n for n in imports_of(p) if n.startswith("pipelines")
                                                  and not n.startswith(allowed))
                 for p in modules("trainer")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_shared_parts_import_no_stage_and_stages_import_only_upstream_stages():
    wrong = {}
    for path in modules("pipelines"):
        parts = path.relative_to(REPO / "pipelines").parts
        here = parts[0] if len(parts) > 1 else None
        if here not in STAGES and here != "common":
            continue  # the entry point, the demo, the synthetic data and the benchmarks sit above the stages
        allowed = set() if here == "common" else UPSTREAM[here] | {here}
        reached = {name.split(".")[1] for name in imports_of(path)
                   if name.startswith("pipelines.") and name.split(".")[1] in STAGES}
        if reached - allowed:
            wrong[str(path.relative_to(REPO))] = sorted(reached - allowed)
    assert wrong == {}


def _readme_layout() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return block.splitlines()


def _segment(lines: list[str], entry: str) -> str:
    """The README layout's lines for one entry (`pipelines/`, `  embed/`): its line and the deeper ones after it."""
    start = next(i for i, line in enumerate(lines) if line.startswith(entry + " ") or line == entry)
    depth = len(entry) - len(entry.lstrip())
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= depth), len(lines))
    return "\n".join(lines[start:end])


def test_the_readme_layout_names_every_module_in_its_folder_and_no_module_that_is_gone():
    import re

    lines = _readme_layout()
    for package in ("pipelines", "trainer"):
        folders = [REPO / package, *sorted(p for p in (REPO / package).iterdir()
                                           if p.is_dir() and (p / "__init__.py").exists())]
        for folder in folders:
            entry = f"{package}/" if folder.name == package else f"  {folder.name}/"
            segment = _segment(lines, entry)
            files = sorted(p.name for p in folder.iterdir()
                           if p.suffix in (".py", ".txt") and p.name != "__init__.py")
            missing = [name for name in files if not re.search(rf"(?<![\w/]){re.escape(name)}", segment)]
            assert not missing, f"README's layout does not name {missing} under {entry.strip()}"
        named = set(re.findall(r"[\w]+\.py", _segment(lines, f"{package}/")))
        existing = {p.name for p in (REPO / package).rglob("*.py")}
        assert named <= existing, f"README's layout names modules that do not exist: {sorted(named - existing)}"

