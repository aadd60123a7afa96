"""docs/configs.md's tables of config keys are generated from the init arguments and the Google-style "Args:" docstrings
of the module, the data and the writer; a table that differs from what the code gives fails here (docs drift).
``python tests/docs/test_configs_page.py --write`` rewrites the tables in the page."""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # conftest, when run as a script
from conftest import ROOT  # noqa: E402

PAGE = ROOT / "docs" / "configs.md"
# class -> the config key its arguments sit under, as `lit-featinv predict --print_config` writes them
CLASSES = {"lit_featinv.module.FeatureInversion": "model.init_args.",
           "lit_featinv.runs.data.TargetData": "data.init_args.",
           "lit_featinv.runs.writer.InversionWriter": "writer."}
# arguments whose class docstring has no entry yet: the row's text until it has one (test_supplements_are_needed)
SUPPLEMENT: dict[str, dict[str, str]] = {}  # an argument's text where its docstring has none
BLOCK = re.compile(r"(<!-- keys: (?P<name>[\w.]+) -->\n)(?P<table>(?:(?!<!--).*\n)*)(<!-- /keys -->)")


def load(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def parameters(cls) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]


def docstring_args(cls) -> dict[str, str]:
    """The "Args:" section of a class docstring: name -> text (joined lines; ``a, b: text`` gives both)."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Args:" not in lines:
        return {}
    out, names = {}, []
    for line in lines[lines.index("Args:") + 1:]:
        if line and not line.startswith(" "):
            break  # the section ended
        entry = re.match(r"^    (\w+(?:, \w+)*): ?(.*)$", line)
        if entry:
            names = entry[1].split(", ")
            for name in names:
                out[name] = entry[2].strip()
        elif line.strip():
            for name in names:
                out[name] += " " + line.strip()
    return out


def plain(text: str) -> str:
    """Sphinx roles and double backticks as Markdown code; pipes escaped for a table cell."""
    text = re.sub(r":(?:class|meth|func|mod|data|attr):`~?([\w.]+)`", lambda m: f"`{m[1].rpartition('.')[2]}`"
                  if m[0].count("~") else f"`{m[1]}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def default(parameter: inspect.Parameter) -> str:
    value = parameter.default
    if value is inspect.Parameter.empty:
        return "required"
    own = next((c for c in type(value).__mro__ if c.__module__.startswith("lit_featinv")
                and not c.__name__.startswith("LazyInstance_")), None)  # jsonargparse's lazy_instance(Class)
    if own is not None and not isinstance(value, (bool, int, float, str)):
        return f"`lit_featinv.{own.__name__}` (its defaults)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def table(path: str) -> str:
    """The Markdown table of a class's init arguments: key, type, default, what it does."""
    cls, prefix = load(path), CLASSES[path]
    docs = {**SUPPLEMENT.get(path, {}), **docstring_args(cls)}
    rows = ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    for p in parameters(cls):
        kind = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
        kind = "" if p.annotation is inspect.Parameter.empty else f"`{kind}`"  # a pipe in a code span stays in its cell
        rows.append(f"| `{prefix}{p.name}` | {kind} | {default(p)} | {plain(docs.get(p.name, ''))} |")
    return "\n".join(rows)


def cells_of(row: str) -> list[str]:
    """A table row's cells: split at the pipes outside code spans and not escaped."""
    cells, cell, code, previous = [], "", False, ""
    for char in row.strip()[1:-1]:
        if char == "`":
            code = not code
        if char == "|" and not code and previous != "\\":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
        previous = char
    return cells + [cell.strip()]


def page_tables(text: str) -> dict[str, str]:
    return {m["name"]: m["table"] for m in BLOCK.finditer(text)}


def write() -> None:
    text = PAGE.read_text()
    PAGE.write_text(BLOCK.sub(lambda m: m[1] + table(m["name"]) + "\n" + m[4], text))


def test_the_page_has_a_table_for_each_class():
    assert set(page_tables(PAGE.read_text())) == set(CLASSES)


def test_the_tables_are_the_generated_ones():
    """A key added, removed or renamed in the code, a default or a docstring changed: the page follows
    (python tests/docs/test_configs_page.py --write)."""
    for name, shown in page_tables(PAGE.read_text()).items():
        assert shown == table(name) + "\n", f"docs/configs.md: the table of {name} differs from the code; run " \
                                     f"python tests/docs/test_configs_page.py --write"


def test_every_init_argument_has_a_row_with_a_description():
    """Read from the page itself, apart from the generator: each argument's key is a row, and says what it does."""
    tables = page_tables(PAGE.read_text())
    for name, prefix in CLASSES.items():
        rows = {}
        for line in tables[name].splitlines()[2:]:
            cells = cells_of(line)
            rows[cells[0].strip("`")] = cells
        for p in parameters(load(name)):
            assert f"{prefix}{p.name}" in rows, f"docs/configs.md: no row for {prefix}{p.name}"
            assert rows[f"{prefix}{p.name}"][3], f"docs/configs.md: {prefix}{p.name} says nothing"


def test_every_argument_has_a_docstring_entry_or_a_supplement():
    for name in CLASSES:
        docs = {**SUPPLEMENT.get(name, {}), **docstring_args(load(name))}
        missing = [p.name for p in parameters(load(name)) if not docs.get(p.name)]
        assert not missing, f"{name}: no 'Args:' entry for {missing}"


def test_supplements_are_needed():
    """A supplement for an argument the docstring now describes is dropped."""
    for name, extra in SUPPLEMENT.items():
        assert not set(extra) & set(docstring_args(load(name))), f"{name}: the docstring describes {set(extra)} now"


def test_a_deleted_row_fails():
    """The check is not vacuous: the page less one row is not the generated table."""
    text = PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `model.init_args.seed`"))
    shown = page_tables(text.replace(row + "\n", ""))["lit_featinv.module.FeatureInversion"]
    assert shown != table("lit_featinv.module.FeatureInversion") + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
        print(f"wrote the key tables of {PAGE}")
    else:
        print("\n\n".join(table(name) for name in CLASSES))
