"""docs/troubleshooting.md lists every one-line error the tool prints: each raise of an error with a message in
lit_featinv/ has an entry, found by the message's leading static text (the first piece of the string literal, f-string
or concatenation between placeholders that is at least 12 characters long; the longest piece where none is). A new
error message without an entry, or an entry removed, fails here."""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT

PAGE = ROOT / "docs" / "troubleshooting.md"
PACKAGE = ROOT / "lit_featinv"
MIN_LENGTH = 12

# Raise sites left out, by (file under lit_featinv/, enclosing function, leading static text; '' for none). A raise with
# no message (abstract methods, a bare re-raise) is left out by itself.
NOT_USER_FACING = {
    ("method/guidance.py", "weight", "a per-step scale needs the number of steps: call check() first"):
        "a programming error: check() runs in FeatureInversion.__init__",
    ("models/extractors.py", "hook", ""): "control flow: the hooked layer's output ends the forward pass",
    ("runs/signals.py", "stop", ""): "a stop signal; its line, 'stopped by SIG...', is on the page",
    ("app/cli.py", "main", ""): "exit status 128 + signal; the line before it is on the page",
    ("app/console.py", "main", ""): "exit status only (128 + signal, or 2 after the usage)",
    ("app/cli.py", "parse_arguments", ""): "the config parser's own error with a 'did you mean' (on the page)",
    ("app/embed.py", "main", ""): "'lit-featinv encode-prompt: error: ' + a message checked at its raise",
    ("app/report.py", "make_report", ""): "'lit-featinv report: error: ' + a message checked at its raise",
    ("analysis/reading.py", "load_extractor", ""): "a parse or config error of an extractor file, checked there",
    ("analysis/top_images.py", "add_top_images", ""): "'run LABEL: ' + an extractor's error, checked there",
    ("models/extractors.py", "__init__", ""): "torchvision's own message for an unknown model name",
    ("runs/sources.py", "image_targets", ""): "'FILE: ' + the image library's error for a file it cannot read",
}
SHORTEST = 6  # a fallback piece shorter than this is no text to look for


def literal_pieces(node: ast.AST, returns: dict[str, ast.AST]) -> list[str] | None:
    """The static text of a message as pieces between its placeholders ('' marks a placeholder); None when the
    message is no string expression (a variable, str(err))."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        out = []
        for value in node.values:
            out += [value.value] if isinstance(value, ast.Constant) else [""]
        return out
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal_pieces(node.left, returns), literal_pieces(node.right, returns)
        if left is None and right is None:
            return None
        return (left or [""]) + (right or [""])
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in returns:
        return literal_pieces(returns[node.func.id], returns)  # a helper that builds the line (missing_weights)
    return None


def needle(pieces: list[str]) -> str:
    """The leading static text: the first piece of MIN_LENGTH characters or more (whitespace collapsed and trimmed),
    else the longest piece."""
    texts = [" ".join(p.split()).strip(" :;,.") for p in pieces]
    long = [t for t in texts if len(t) >= MIN_LENGTH]
    if long:
        return long[0]
    longest = max(texts, key=len)
    return longest if len(longest) >= SHORTEST else ""


def string_helpers(tree: ast.Module) -> dict[str, ast.AST]:
    """Module functions whose last statement returns a string expression: their name -> that expression."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.body and isinstance(node.body[-1], ast.Return):
            value = node.body[-1].value
            if isinstance(value, (ast.JoinedStr, ast.Constant, ast.BinOp)):
                out[node.name] = value
    return out


def raise_sites() -> list[tuple[str, str, str, int, ast.Call | None]]:
    """(file under lit_featinv/, enclosing function, exception, line, call) for every ``raise X(...)``."""
    sites = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        rel = path.relative_to(PACKAGE).as_posix()

        def visit(node, function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(child, child.name)
                    continue
                if isinstance(child, ast.Raise) and child.exc is not None:
                    call = child.exc if isinstance(child.exc, ast.Call) else None
                    name = ast.unparse(call.func if call else child.exc)
                    sites.append((rel, function, name, child.lineno, call))
                visit(child, function)
        visit(tree, "<module>")
    return sites


def messages() -> list[tuple[str, str]]:
    """(where, leading static text) of every user-facing error message raised in lit_featinv/."""
    out = []
    helpers = {}
    for path in PACKAGE.rglob("*.py"):
        helpers |= string_helpers(ast.parse(path.read_text()))
    for rel, function, name, line, call in raise_sites():
        if call is None or not call.args:
            continue  # a bare re-raise, an exception object built elsewhere, an exception without a message
        where = f"lit_featinv/{rel}:{line} ({function}, {name})"
        if name == "RenamedKey":  # RenamedKey(OLD, NEW, HINT) prints 'OLD was renamed NEW: HINT' (errors.py)
            out.append((where, "was renamed model.prior"))
            continue
        message = call.args[1] if name == "ConfigError" and len(call.args) > 1 else call.args[0]
        pieces = literal_pieces(message, helpers)
        text = needle(pieces) if pieces else ""
        if (rel, function, text) not in NOT_USER_FACING:
            out.append((where, text))  # '' (no static text, not allowed above) fails below
    return out


def page_text() -> str:
    return " ".join(PAGE.read_text().split())


def test_the_allow_list_names_raise_sites_that_exist():
    """An allow-list entry whose raise is gone would hide nothing, but says something false: remove it."""
    helpers = {}
    for path in PACKAGE.rglob("*.py"):
        helpers |= string_helpers(ast.parse(path.read_text()))
    sites = set()
    for rel, function, name, _, call in raise_sites():
        if call is not None and call.args:
            message = call.args[1] if name == "ConfigError" and len(call.args) > 1 else call.args[0]
            pieces = literal_pieces(message, helpers)
            sites.add((rel, function, needle(pieces) if pieces else ""))
    assert set(NOT_USER_FACING) <= sites, set(NOT_USER_FACING) - sites


def test_the_check_finds_the_messages():
    """The parse finds the raises it should (a check that finds nothing passes for nothing)."""
    found = dict((needle, where) for where, needle in messages())
    assert len(found) > 150
    assert "does not exist or is not a folder; run" in found  # an f-string that starts with a placeholder
    assert "Fetch it with ``hf download" in found or any(n.startswith("cannot load") for n in found)  # a helper's line
    assert "is neither a file nor a preset (cwd" in found  # a concatenation
    assert "" not in found, found.get("")


@pytest.mark.parametrize("where,text", messages(), ids=lambda v: v if isinstance(v, str) and v.startswith("lit_") else "")
def test_every_error_message_has_an_entry(where, text):
    assert text and text in page_text(), f"{where}: no entry in docs/troubleshooting.md with {text!r}"


def test_removing_an_entry_fails(monkeypatch):
    """Delete one entry's line from the page: its message is then missing."""
    lines = PAGE.read_text().splitlines()
    where, text = next((w, t) for w, t in messages() if "holds a run of another config" in t)
    kept = " ".join(" ".join(line for line in lines if text not in line).split())
    assert text in page_text() and text not in kept
