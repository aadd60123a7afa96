"""``lit-featinv predict --help``: the job's options and the Trainer's few that matter; ``--help-all``: all."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from lit_featinv.app.console import main

SHOWN = ["--model ", "--model.help", "--data ", "--data.help", "--writer.output_dir", "--writer.overwrite",
         "--trainer.accelerator", "--trainer.devices", "--trainer.precision", "--trainer.default_root_dir",
         "--trainer.strategy", "--trainer.num_nodes", "--config", "--print_config", "--seed_everything", "--threads"]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
HIDDEN = ["max_epochs", "gradient_clip_val", "ckpt_path", "--trainer.logger", "--trainer.callbacks"]


def printed(capsys, *args: str) -> str:
    """What ``lit-featinv ARGS`` prints, checking that it exits with status 0."""
    try:
        main(list(args))
    except SystemExit as end:
        assert end.code in (0, None)
    return capsys.readouterr().out


def test_short_help_from_the_command_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert all(option in text for option in SHOWN), [option for option in SHOWN if option not in text]
    assert not [word for word in HIDDEN if word in text]
    assert "lit-featinv predict --help-all" in text and "--model.help lit_featinv.FeatureInversion" in text
    assert len(text.splitlines()) < 180  # LightningCLI: 487
    options = text[text.index("\n\n"):]  # after the usage: the job's options first, the general ones last
    assert options.index("--model ") < options.index("--trainer.accelerator") < options.index("--seed_everything")


def test_help_all_is_the_full_help_and_h_the_short_one(capsys):
    short = printed(capsys, "predict", "--help")
    assert printed(capsys, "predict", "-h") == short
    full = printed(capsys, "predict", "--help-all")
    assert "--trainer.max_epochs" in full and "--trainer.gradient_clip_val" in full and "--ckpt_path" in full
    assert "--help-all" not in full and all(option in full for option in SHOWN)
    assert 3 * len(short.splitlines()) < len(full.splitlines())


def test_short_help_keeps_the_rest_of_the_command_line(capsys):
    text = printed(capsys, "predict", "--config", QUICKSTART, "--help")
    assert "--trainer.devices" in text and "max_epochs" not in text
    model = printed(capsys, "predict", "--model.help", "lit_featinv.FeatureInversion")  # no --help: not shortened
    assert "--model.prior" in model


def test_the_knobs_a_user_turns_first_are_in_the_short_help_with_what_they_do_here(capsys):
    text = printed(capsys, "predict", "--help")
    knobs = text[text.index("The knobs turned first"):]
    for option, said in (("--model.init_args.num_inference_steps N", "scheduler steps. (default: 50)"),
                         ("--model.init_args.recurrence K", "self-recurrence K"),
                         ("--model.init_args.guidance.init_args.scale W", "w: one value, one per step, or pieces"),
                         ("--data.init_args.images DIR", "folder (searched recursively)")):
        assert said in " ".join(knobs[knobs.index(option):].split()[:40]), option
    body = text[text.index("\n\n"):]  # after the usage
    assert body.index("The knobs turned first") < body.index("--model CONFIG")  # first
    root = " ".join(text[text.index("--trainer.default_root_dir DEFAULT_ROOT_DIR\n"):].split()[:30])
    assert "The run folder" in root and "logs and weights" not in root
    assert "Writes every generation into the run folder as it goes, which a rerun of the same config resumes:" in text

