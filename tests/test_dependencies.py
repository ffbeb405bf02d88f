"""What the package imports is what it declares: every third-party module imported anywhere in alignment_pipeline
belongs to a distribution in [project].dependencies (not only in an extra), so `pip install .` runs the demo."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# Imported only inside a guard that works without it (the reason is beside each).
OPTIONAL = {"flash_attn": "an attention kernel the GPU benchmark reports on when installed"}


def _imported_modules() -> dict[str, set[str]]:
    """Top-level module -> the files importing it (absolute imports only; relative ones are the package's)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "alignment_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {_normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in reqs}  # noqa: E731
    extras = set().union(*(names(v) for v in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), extras


def test_every_imported_distribution_is_a_runtime_dependency():
    declared, extras = _declared()
    distributions = packages_distributions()
    missing = {}
    for module, files in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module in ("alignment_pipeline", "__future__") or module in OPTIONAL:
            continue
        dists = {_normalise(d) for d in distributions.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) belongs to no installed distribution"
        if not dists & declared:
            missing[module] = (sorted(dists), "only in an extra" if dists & extras else "undeclared", sorted(files))
    assert missing == {}, f"imported but not in [project].dependencies: {missing}"


def test_optional_imports_are_guarded():
    """An optional module is imported only inside try/except ImportError or a function that checks for it."""
    for module in OPTIONAL:
        for path in (ROOT / "alignment_pipeline").rglob("*.py"):
            text = path.read_text()
            if re.search(rf"^\s*(import|from) {module}\b", text, re.MULTILINE):
                tree = ast.parse(text)
                top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                             and any((getattr(n, "module", None) or a.name).split(".")[0] == module
                                     for a in n.names)]
                assert not top_level, f"{path} imports optional {module} at module level"
