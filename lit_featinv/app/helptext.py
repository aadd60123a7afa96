"""``lit-featinv predict --help``: the knobs turned first, the job's own options and the few Trainer options that
matter to it, formatted from the real parser; ``--help-all`` prints LightningCLI's full help."""
from __future__ import annotations

import argparse
import copy
import inspect
import textwrap

import docstring_parser

JOB = ("model", "data", "writer")  # the job's own keys, shown first and whole
TRAINER = ("accelerator", "devices", "strategy", "precision", "default_root_dir", "num_nodes")
GENERAL = ("help", "config", "print_config", "seed_everything", "threads")
WIDTH = 100  # a group title (a class docstring's summary) longer than this is wrapped
TRAINER_TITLE = "Lightning Trainer, the options that matter here (all of them: --help-all)"
KNOBS_TITLE = "The knobs turned first (a config's values: --print_config; a class's every option: --model.help CLASS)"
# (option, the class whose docstring says what it does, metavar)
KNOBS = (("model.init_args.num_inference_steps", "FeatureInversion", "N"),
         ("model.init_args.recurrence", "FeatureInversion", "K"),
         ("model.init_args.guidance.init_args.scale", "Guidance", "W"),
         ("model.init_args.samples_per_target", "FeatureInversion", "N"),
         ("model.init_args.seed", "FeatureInversion", "SEED"),
         ("model.init_args.stop_cosine", "FeatureInversion", "COSINE"),
         ("data.init_args.images", "TargetData", "DIR"), ("data.init_args.features", "TargetData", "FILE"),
         ("data.init_args.limit", "TargetData", "N"), ("data.init_args.batch_size", "TargetData", "N"))
# Lightning's text for a Trainer option, as it is here
SAYS = {"trainer.default_root_dir": "The run folder (images/, metrics.jsonl, config.yaml, ...) when writer.output_dir "
                                    "is not set, relative to the current folder (null: the current folder)."}
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


def knobs() -> argparse._ArgumentGroup:
    """The :data:`KNOBS`, each with its class docstring's words."""
    import lit_featinv
    group = argparse.ArgumentParser(add_help=False).add_argument_group(textwrap.fill(KNOBS_TITLE, WIDTH - 1))
    for option, owner, metavar in KNOBS:
        cls, name = getattr(lit_featinv, owner), option.rpartition(".")[2]
        said = {p.arg_name: p.description for p in docstring_parser.parse(cls.__doc__).params}
        group.add_argument(f"--{option}", metavar=metavar, help=said[name],
                           default=inspect.signature(cls).parameters[name].default)  # the class's own
    return group


def short_groups(parser) -> list:
    """The parser's option groups with only the shown options, in :func:`rank` order; empty groups left out."""
    groups = []
    for group in parser._action_groups:
        shown = [action for action in group._group_actions if rank(action.dest) is not None]
        if not shown:
            continue
        group = copy.copy(group)
        group._group_actions = [retold(action) for action in shown]
        title = TRAINER_TITLE if shown[0].dest.startswith("trainer.") else group.title
        group.title = textwrap.fill(title, WIDTH - 1) if title else title  # argparse adds a colon
        groups.append(group)
    return sorted(groups, key=lambda group: rank(group._group_actions[0].dest))


def retold(action: argparse.Action) -> argparse.Action:
    """The action, with what it does here (:data:`SAYS`) in place of Lightning's words."""
    if action.dest not in SAYS:
        return action
    action = copy.copy(action)
    action.help = SAYS[action.dest]
    return action


def short_help(parser, description: str | None = None) -> str:
    """The ``predict`` parser's help: the knobs turned first, then only the options of :func:`rank`, ending with where
    to find the rest."""
    short = copy.copy(parser)  # formatted by the parser's own code, its option lists narrowed
    short._action_groups = [knobs(), *short_groups(parser)]
    short._actions = [action for action in parser._actions if rank(action.dest) is not None]
    short.description = description or parser.description
    return type(parser).format_help(short) + MORE
