"""The package's layout holds (docs/api.md, "Layout"): lower layers never import higher ones, no import circle, no file
past ~400 lines, every public name resolves, and benchmarks and notebooks use public names only."""
from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "lit_featinv"
# lowest first: a module may import its own layer and lower ones, never a higher one
LAYERS = [("lit_featinv", "lit_featinv.lazy", "lit_featinv.errors", "lit_featinv.config"), ("lit_featinv.models",),
          ("lit_featinv.method",), ("lit_featinv.runs",), ("lit_featinv.module",), ("lit_featinv.analysis",),
          ("lit_featinv.app", "lit_featinv.__main__")]
SUBPACKAGES = ["models", "method", "runs", "analysis", "app"]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    found = [n for n, names in enumerate(LAYERS) for name in names
             if module == name or (name != "lit_featinv" and module.startswith(name + "."))]
    assert found, f"{module} is in no layer: add it to LAYERS and to the Layout table of docs/api.md"
    return max(found)


def is_module(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (in functions too), resolved to module names."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lit_featinv")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("lit_featinv"):
                continue
            for alias in node.names:  # `from . import x`: the module x where there is one
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return found - {me}


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_lower_layers_never_import_higher_ones():
    upward = [f"{m} (layer {layer(m)}) imports {n} (layer {layer(n)})" for m, found in GRAPH.items() for n in found
              if layer(n) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for n in sorted(GRAPH.get(module, ())):
            assert state.get(n) != "open", "import circle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[module] = "done"
    for module in GRAPH:
        if module not in state:
            visit(module)


def test_the_check_finds_an_upward_import_and_a_circle(tmp_path):
    """The two checks above can fail: an upward import and a circle are caught on a made-up graph."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"lit_featinv.method.loop": {"lit_featinv.runs.writer"}, "lit_featinv.runs.writer": set()}
        with pytest.raises(AssertionError, match="imports lit_featinv.runs.writer"):
            test_lower_layers_never_import_higher_ones()
        GRAPH = {"lit_featinv.runs.a": {"lit_featinv.runs.b"}, "lit_featinv.runs.b": {"lit_featinv.runs.a"}}
        with pytest.raises(AssertionError, match="import circle: lit_featinv.runs.a -> lit_featinv.runs.b -> "):
            test_no_import_circle()
    finally:
        GRAPH = saved


def test_every_module_is_short():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("package", ["lit_featinv"] + [f"lit_featinv.{name}" for name in SUBPACKAGES])
def test_every_public_name_resolves(package):
    imported = importlib.import_module(package)
    for name in imported.__all__:
        value = getattr(imported, name)
        assert value is not None and not isinstance(value, type(imported)), f"{package}.{name}"
    assert set(imported.__all__) <= set(dir(imported))


def test_config_class_paths_are_the_short_public_ones():
    """Every ``class_path: lit_featinv.X`` a preset names is a top-level public name."""
    import lit_featinv
    named = {line.split("class_path:")[1].split("#")[0].strip() for p in (ROOT / "configs").rglob("*.yaml")
             for line in p.read_text().splitlines() if "class_path: lit_featinv." in line}
    assert named and {name.split(".", 1)[1] for name in named} <= set(lit_featinv.__all__)


def public_imports(source: str, where: str) -> list[str]:
    """What ``source`` imports from the package that is not a public name (``lit_featinv`` or a sub-package's
    ``__all__``)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [f"{where}: import {a.name}" for a in node.names if a.name.startswith("lit_featinv.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lit_featinv"):
            if node.module not in ["lit_featinv"] + [f"lit_featinv.{name}" for name in SUBPACKAGES]:
                bad.append(f"{where}: from {node.module} import ...")
                continue
            public = importlib.import_module(node.module).__all__
            bad += [f"{where}: {a.name} is not in {node.module}.__all__" for a in node.names if a.name not in public]
    return bad


def test_benchmarks_and_notebooks_import_only_public_names():
    bad = [b for p in sorted((ROOT / "benchmarks").glob("*.py")) for b in public_imports(p.read_text(), p.name)]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        bad += public_imports(source, path.name)
    assert not bad, "\n".join(bad)
    assert public_imports("from lit_featinv.method.loop import reverse_loop", "x") == [
        "x: from lit_featinv.method.loop import ..."]
