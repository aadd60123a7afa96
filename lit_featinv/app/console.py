"""The ``lit-featinv`` command: its subcommands are dispatched before any heavy import (torch, Lightning, diffusers),
so ``lit-featinv --help`` prints at once."""
from __future__ import annotations

import os
import sys

HELP = """usage: lit-featinv {predict,report,presets,encode-prompt} ...

Generate images whose features match target features by guided diffusion, and compare the runs.

subcommands:
  predict   run a config file or a preset, e.g. lit-featinv predict --config quickstart
            (lit-featinv predict --help: its main options; --help-all: all of them;
             --model.help CLASS: a class's)
  report    runs side by side in one HTML page: lit-featinv report RUN_DIR [RUN_DIR ...] --out report.html
            (lit-featinv report --help: its options)
  presets   the shipped configs, by name, with what each does
  encode-prompt
            a prior's prompt embeddings to a file, so that the run loads no text encoder:
            lit-featinv encode-prompt --prior lit_featinv.FluxPrior --pretrained ID --prompt "" --out FILE.pt
"""


def main(args: list[str] | None = None) -> None:
    """``lit-featinv SUBCOMMAND ...``: ``report`` (:mod:`lit_featinv.app.report`) or the LightningCLI job
    (:func:`lit_featinv.app.cli.main`: ``predict``)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] in ([], ["-h"], ["--help"]):
        print(HELP, end="", file=sys.stdout if argv else sys.stderr)
        if not argv:
            raise SystemExit(2)
        return
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # a class_path in the current folder, as `python -m lit_featinv` finds it
    if argv[0] == "presets":
        from .presets import main as presets
        return presets(argv[1:])
    if argv[0] == "report":
        from .report import make_report
        return make_report(argv[1:])
    if argv[0] == "encode-prompt":
        from .embed import main as encode
        return encode(argv[1:])
    from ..runs.signals import NOTHING_YET, STOP, StopRequested
    owned = STOP.install()  # a stop signal while torch and the job load ends in one line too
    try:
        from .cli import main as job
        return job(args)
    except StopRequested as stop:  # before the job could take over
        print(f"lit-featinv: {stop}: {NOTHING_YET}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    finally:
        if owned:
            STOP.end(process_ends=args is None)  # called with args: in a process that goes on
