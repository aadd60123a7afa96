"""``lit-featinv predict --help``: the job's own options and the few Trainer options that matter to it, formatted
from the real parser; ``--help-all`` prints LightningCLI's full help."""
from __future__ import annotations

import copy
import textwrap

JOB = ("model", "data", "writer")  # the job's own keys, shown first and whole
TRAINER = ("accelerator", "devices", "strategy", "precision", "default_root_dir", "num_nodes")
GENERAL = ("help", "config", "print_config", "seed_everything", "threads")
WIDTH = 100  # a group title (a class docstring's summary) longer than this is wrapped
TRAINER_TITLE = "Lightning Trainer, the options that matter here (all of them: --help-all)"
MORE = """
All options, the Lightning Trainer's too: lit-featinv predict --help-all
A class's own options: --model.help CLASS, --data.help CLASS
  e.g. lit-featinv predict --model.help lit_featinv.FeatureInversion
"""


def rank(dest: str) -> int | None:
    """Where an option goes in the short help (lower first), or None when it is left out."""
    if dest.split(".")[0] in JOB:
        return JOB.index(dest.split(".")[0])
    if dest.startswith("trainer.") and dest[len("trainer."):] in TRAINER:
        return len(JOB)
    return len(JOB) + 1 if dest in GENERAL else None


def short_groups(parser) -> list:
    """The parser's option groups with only the shown options, in :func:`rank` order; empty groups left out."""
    groups = []
    for group in parser._action_groups:
        shown = [action for action in group._group_actions if rank(action.dest) is not None]
        if not shown:
            continue
        group = copy.copy(group)
        group._group_actions = shown
        title = TRAINER_TITLE if shown[0].dest.startswith("trainer.") else group.title
        group.title = textwrap.fill(title, WIDTH - 1) if title else title  # argparse adds a colon
        groups.append(group)
    return sorted(groups, key=lambda group: rank(group._group_actions[0].dest))


def short_help(parser, description: str | None = None) -> str:
    """The ``predict`` parser's help with only the options of :func:`rank`, ending with where to find the rest."""
    short = copy.copy(parser)  # formatted by the parser's own code, its option lists narrowed
    short._action_groups = short_groups(parser)
    short._actions = [action for action in parser._actions if rank(action.dest) is not None]
    short.description = description or parser.description
    return type(parser).format_help(short) + MORE
