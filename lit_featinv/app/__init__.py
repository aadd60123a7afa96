"""The applications: the ``lit-featinv`` console (``predict`` through LightningCLI, ``report``, ``presets``), its
help, and the CPU thread choice. ``run(["predict", ...])`` and ``make_report([...])`` are the commands as
functions."""
from ..lazy import exports

__all__, __getattr__, __dir__ = exports(__name__, {
    "console": ["main"],
    "cli": ["run", "FeatInvCLI", "quiet"],
    "report": ["make_report"],
    "threads": ["choose"],
})
