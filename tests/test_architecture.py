"""The package's layers, read from its imports (ast): each folder imports only the layers
below it, so data never builds a model, layers never read files, training never depends on
the report modules (docs/architecture.md, "Package layout")."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "equipot"

# folder → the equipot subpackages its modules must not import
ABOVE_MODELS = ("uncertainty", "train", "finetune", "analysis", "cli", "calculator", "predict",
                "engines")
FORBIDDEN = {
    "nn": ("blocks", "physics", "model", "data", *ABOVE_MODELS),
    "blocks": ("physics", "model", "data", *ABOVE_MODELS),
    "physics": ("blocks", "model", "data", *ABOVE_MODELS),
    "data": ("nn", "blocks", "physics", "model", *ABOVE_MODELS),
    "model": ("data", *ABOVE_MODELS),
    "uncertainty": ("train", "finetune", "analysis", "cli", "calculator", "predict", "engines"),
    "train": ("finetune", "analysis", "cli", "calculator", "predict", "engines"),
    "finetune": ("analysis", "cli", "calculator", "predict", "engines"),
    "analysis": ("finetune", "cli", "predict", "engines"),
    "engines": ("train", "finetune", "analysis", "cli"),
}


def equipot_imports(path: Path) -> set[str]:
    """The equipot modules ``path`` imports (``from equipot import x`` counts as equipot.x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == "equipot"}


def violations(folder: str, package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted((package / folder).rglob("*.py")):
        for name in sorted(equipot_imports(path)):
            layer = name.split(".")[1] if name.count(".") else ""
            if layer in FORBIDDEN[folder]:
                found.append(f"{path.relative_to(package.parent)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_layer_imports_only_the_layers_below_it(folder):
    assert violations(folder) == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text("from equipot.model.build import build_potential\n"
                                              "from equipot import physics\n")
    assert [line.split(" imports ")[1] for line in violations("data", tmp_path)] == [
        "equipot.model.build", "equipot.model.build.build_potential", "equipot.physics"]


def test_every_folder_of_the_package_has_its_rule():
    folders = {path.name for path in PACKAGE.iterdir()
               if path.is_dir() and (path / "__init__.py").exists()}
    assert folders - {"cli", "datasets", "testing"} == set(FORBIDDEN)


def test_importing_the_package_switches_no_matplotlib_backend():
    """A notebook that imports equipot keeps its plotting backend (matplotlib.use is never
    called on import)."""
    code = ("import sys, matplotlib; calls = []; matplotlib.use = lambda *a, **k: calls.append(a); "
            "import equipot.cli.train, equipot.cli.evaluate, equipot.cli.check_model; "
            "sys.exit(len(calls))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
