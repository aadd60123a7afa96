"""The documentation's examples work as written (issue 37): every code block of README.md and docs/*.md marked on
the line before its fence with

- ``<!-- test: run -->``: a ```python block is executed from an empty folder (without Lightning's tips and device
  lines: the examples are quiet), a ```bash block's commands are run there;
- ``<!-- test: parse -->``: a ```bash block's ``lit-featinv predict`` commands are parsed with ``--print_config``
  (presets, files and keys must exist; nothing loads: for GPU and hub commands), its other ``lit-featinv``
  subcommands must exist, its ``pip install`` extras must be the project's."""
from __future__ import annotations

import logging
import re
import shlex
import subprocess
import tomllib

import pytest

from conftest import ROOT, pages

MARKED = re.compile(r"<!-- test: (run|parse) -->\n```(\w+)\n(.*?)```", re.S)
PAGES = pages()


def marked_blocks() -> list[tuple[str, str, str, str]]:
    """(page:line, mode, language, code) of every marked block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in MARKED.finditer(text):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", *match.groups()))
    return found


BLOCKS = marked_blocks()


def commands(code: str) -> list[list[str]]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped, split as the shell does."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_the_pages_mark_blocks_of_each_kind():
    """The markers are there (a renamed marker would silently test nothing)."""
    kinds = {(mode, language) for _, mode, language, _ in BLOCKS}
    assert {("run", "python"), ("parse", "bash")} <= kinds, kinds
    assert any(where.startswith("README.md") for where, *_ in BLOCKS), "the README's examples are not marked"


@pytest.mark.parametrize("where, mode, language, code", [b for b in BLOCKS if b[1] == "parse"], ids=lambda v: v
                         if isinstance(v, str) and ":" in v and " " not in v else "")
def test_a_marked_command_parses(where, mode, language, code, tmp_path, monkeypatch, capsys):
    from lit_featinv.app.console import HELP, main
    assert language == "bash", f"{where}: only bash blocks are parsed"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    checked = 0
    for argv in commands(code):
        while argv and argv[0] in ("srun", "python", "python3", "-m", "torchrun") or argv[:1] == ["lit_featinv"]:
            argv = argv[1:] if argv[0] != "lit_featinv" else ["lit-featinv", *argv[1:]]
        if argv[:2] == ["pip", "install"]:
            for spec in argv[2:]:
                wanted = re.fullmatch(r"(?:-e )?\.\[(.*)\]", spec)
                assert wanted is None or set(wanted.group(1).split(",")) <= set(extras), f"{where}: {spec}"
            checked += 1
            continue
        assert argv and argv[0] == "lit-featinv", f"{where}: not a lit-featinv command: {shlex.join(argv)}"
        assert f"  {argv[1]} " in HELP or f"  {argv[1]}\n" in HELP, f"{where}: no subcommand {argv[1]}"
        if argv[1] == "predict":
            try:
                main([*argv[1:], "--print_config"])
            except SystemExit as end:
                assert end.code in (0, None), f"{where}: {shlex.join(argv)}\n{capsys.readouterr().err}"
            assert "model:" in capsys.readouterr().out, f"{where}: {shlex.join(argv)} printed no config"
        checked += 1
    assert checked, f"{where}: a parse block without a command"


@pytest.mark.parametrize("where, mode, language, code", [b for b in BLOCKS if b[1] == "run"],
                         ids=lambda v: v if isinstance(v, str) and ":" in v and " " not in v else "")
def test_a_marked_example_runs(where, mode, language, code, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if language == "bash":
        for argv in commands(code):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{where}: {shlex.join(argv)}\n{done.stderr[-2000:]}"
        return
    assert language == "python", f"{where}: a run block must be python or bash"
    monkeypatch.delenv("LIT_FEATINV_VERBOSE", raising=False)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(caplog.handler)  # Lightning's loggers may not pass records to the root's handlers
    try:
        exec(compile(code, where, "exec"), {"__name__": "__example__"})
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(caplog.handler)
            logger.setLevel(level)
    said = caplog.text + "".join(capfd.readouterr())
    assert "Tip" not in said and "GPU available" not in said, f"{where} is not quiet:\n{said[-2000:]}"
    for saved in re.findall(r"\.save\(\"([^\"]+)\"\)", code):
        assert (tmp_path / saved).is_file(), f"{where}: {saved} was not written"


def test_a_broken_example_fails(tmp_path):
    """The parse check fails on an unknown key (so a passing parse means something)."""
    from lit_featinv.app.console import main
    with pytest.raises(SystemExit) as end:
        main(["predict", "--config", "quickstart", "--data.init_args.imagez", "x", "--print_config"])
    assert end.value.code not in (0, None)
