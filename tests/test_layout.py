"""The package layout's rules, read from the source with ast (no imports executed).

- ``cyclekit.models`` holds networks only: it imports nothing from training/translate/cli/mnist;
- nothing imports ``cyclekit.cli`` (the click layer sits on top; ``__main__`` starts it);
- ``cyclekit.translate`` never imports ``cyclekit.training`` (inference must not pull in the
  trainer, W&B or torch.distributed);
- no library function is named ``test_*`` (pytest would collect it);
- every user-facing error class derives from ``CyclekitError``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cyclekit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every cyclekit module ``path`` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m == "cyclekit" or m.startswith("cyclekit.")}


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _violations(source_prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for name, path in MODULES.items():
        if name == source_prefix or name.startswith(source_prefix + "."):
            for imported in _imports(path):
                if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                    bad.append(f"{name} imports {imported}")
    return bad


def test_rules_see_every_package():
    packages = {n.split(".")[1] for n in MODULES if n.count(".") >= 1}
    assert {"cli", "translate", "training", "data", "models", "mnist"} <= packages


def test_models_import_no_feature_package():
    forbidden = ("cyclekit.training", "cyclekit.translate", "cyclekit.cli", "cyclekit.mnist")
    assert _violations("cyclekit.models", forbidden) == []


def test_translate_never_imports_training():
    assert _violations("cyclekit.translate", ("cyclekit.training",)) == []


def test_nothing_imports_the_cli():
    bad = [
        f"{name} imports {imp}"
        for name, path in MODULES.items()
        if not name.startswith("cyclekit.cli") and name != "cyclekit.__main__"
        for imp in _imports(path)
        if imp == "cyclekit.cli" or imp.startswith("cyclekit.cli.")
    ]
    assert bad == []


def test_the_checker_catches_a_broken_rule(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from cyclekit.training.loop import train\n")
    assert "cyclekit.training.loop" in _imports(bad)


def test_no_library_function_is_named_like_a_test():
    names = [
        f"{name}.{node.name}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    ]
    assert names == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if "cli" not in n.split(".")))
def test_error_classes_derive_from_the_one_base(name):
    from cyclekit.errors import CyclekitError

    module = importlib.import_module(name)
    for attr, obj in vars(module).items():
        if (
            inspect.isclass(obj)
            and issubclass(obj, Exception)
            and obj.__module__ == name
            and attr.endswith("Error")
        ):
            assert issubclass(obj, CyclekitError), f"{name}.{attr}"
