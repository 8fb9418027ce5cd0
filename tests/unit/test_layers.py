"""The package's layers import only from the layers before them: data flows one way, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import qa_lightning

PACKAGE = Path(qa_lightning.__file__).resolve().parent
# Each layer may import from itself and the layers before it (DEVELOPERS.md, "Layers").
LAYERS = (
    {"errors", "paths", "utils", "__init__", "__main__"},
    {"hub"},
    {"data"},
    {"decoding"},
    {"metrics"},
    {"report"},
    {"model"},
    {"inference"},
    {"training"},
    {"serving"},
    {"cli"},
)


def layer_of(top: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports_of(path: Path) -> set[str]:
    """The top-level package names below ``qa_lightning`` that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "qa_lightning" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_imports_only_earlier_layers() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own in ("__init__", "__main__"):  # the package's lazy re-exports and `python -m`
            continue
        for target in imports_of(path) - {own}:
            if target in {"__init__", "__main__"} or layer_of(target) > layer_of(own):
                wrong.append(f"{path.relative_to(PACKAGE)} imports qa_lightning.{target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_the_data_layer_imports_no_later_layer() -> None:
    later = {"model", "decoding", "metrics", "report", "training", "inference", "serving", "cli"}
    for path in (PACKAGE / "data").rglob("*.py"):
        assert not imports_of(path) & later, path
