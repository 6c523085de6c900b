"""The package's layers read top-down: a module imports only from its own layer or the ones below."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

# Bottom first. The mini world (espeak-ng corpus, rule tasks, tiny teacher) sits above the
# toolkit's training code it uses and below the stage-4 preparation and the benchmark that use it.
# A trained model for users (pretrained) reads the trained dir and answers with the models; the
# benchmark answers through it; exporting a model writes its card from the benchmark's scores.
LAYERS = [
    ["mtbi.errors"],
    ["mtbi.stage", "mtbi.env", "mtbi.run_lock", "mtbi.run_names"],
    ["mtbi.config", "mtbi.packaged", "mtbi.hub"],
    ["mtbi.cli"],
    ["mtbi.data"],
    ["mtbi.tasks"],
    ["mtbi.models"],
    ["mtbi.train"],
    ["mtbi.pretrained"],
    ["mtbi.mini"],
    ["mtbi.bench", "mtbi.prepare"],
    ["mtbi.export", "mtbi.model_card"],
    ["mtbi.bin"],
]


def _layer(module: str) -> int | None:
    for depth, names in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return depth
    return None


def _imports(path: Path) -> set[str]:
    """Every mtbi module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "mtbi" or name.startswith("mtbi.")}


def test_every_module_has_a_layer() -> None:
    modules = [".".join(p.relative_to(REPO_ROOT).with_suffix("").parts) for p in (REPO_ROOT / "mtbi").rglob("*.py")]
    assert [m for m in modules if _layer(m) is None and m not in ("mtbi.__init__",)] == []


def test_imports_point_down() -> None:
    upward = []
    for path in sorted((REPO_ROOT / "mtbi").rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        here = _layer(module)
        for imported in sorted(_imports(path)):
            there = _layer(imported)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} imports {imported}")
    assert upward == [], "imports that point up the layers:\n" + "\n".join(upward)
