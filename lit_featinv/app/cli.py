"""``lit-featinv predict --config FILE.yaml``: LightningCLI with the Trainer defaults this job needs."""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from functools import partial
from typing import Union

import torch
import yaml
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..config import import_object
from ..errors import config_error, did_you_mean, parse_error
from ..method.sampling import check_timesteps
from ..models.priors import DiffusionPrior, load_scheduler
from ..module import FeatureInversion
from ..runs.data import TargetData
from ..runs.folder import RunFolder, first_process
from ..runs.signals import NOTHING_YET, STOP, StopRequested
from ..runs.writer import InversionWriter
from . import presets, threads
from .helptext import short_help

TRAINER_DEFAULTS = {
    "inference_mode": False,  # the guidance needs gradients
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "use_distributed_sampler": False,  # TargetData gives each rank its own batches
}

class FeatInvCLI(LightningCLI):
    """Only ``predict``: nothing is trained. The writer is always on (``writer.*`` keys)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(InversionWriter, "writer")
        parser.add_argument("--threads", type=Union[int, str], default="auto",
                            help="CPU threads of torch: auto (the cores no other process keeps busy; "
                                 "OMP_NUM_THREADS when set) or a number; a resumed run keeps its count")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """``predict --help``: the job's options first (:func:`lit_featinv.app.helptext.short_help`); ``--help-all``:
        LightningCLI's whole help."""
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list) and "--help-all" in argv:
            args = ["--help" if arg == "--help-all" else arg for arg in argv]
        elif "predict" in self._subcommand_parsers:
            predict = self._subcommand_parsers["predict"]
            predict.format_help = partial(short_help, predict, parser.description)
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:  # an unknown option: the closest known one, when one is close
            unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", str(err))
            known = [o for p in (self._subcommand_parsers.get("predict"), parser) if p for o in p._option_string_actions]
            hint = did_you_mean(unknown[1], known) if unknown else ""
            if not hint:
                raise
            raise argparse.ArgumentError(None, f"{err}{hint}") from None

    latest: "FeatInvCLI | None" = None  # the CLI of this process, for main()'s last line

    def before_instantiate_classes(self) -> None:
        """Before any model loads: the schedule and the data sources are checked, and the run folder is opened
        (lock, leftovers of a killed run, the config contract), so a bad input costs no model loading."""
        FeatInvCLI.latest = self
        config = self.config[self.subcommand]
        check_before_loading(config)
        writer = config.get("writer") or {}
        self.run_folder = RunFolder(writer.get("output_dir") or config.trainer.get("default_root_dir") or os.getcwd())
        recorded = None if writer.get("overwrite") else self.run_folder.saved_config().get("threads")
        config.threads, why = threads.choose(config.get("threads"), recorded if isinstance(recorded, int) else None)
        os.environ["OMP_NUM_THREADS"] = str(config.threads)  # DDP ranks and loader workers: the same count
        if first_process():
            print(f"lit_featinv: {config.threads} CPU thread(s) ({why})", file=sys.stderr)
            self.config_text = self._parser(self.subcommand).dump(config, skip_none=False)
            self.run_folder.open(yaml.safe_load(self.config_text), overwrite=bool(writer.get("overwrite")))

    def instantiate_classes(self) -> None:
        """Then the models load; the run folder records the config once they did (as Lightning's SaveConfigCallback
        would, but in the run folder: the contract a rerun is checked against)."""
        super().instantiate_classes()
        if first_process():
            self.run_folder.record(self.config_text)

    def instantiate_trainer(self, **kwargs):
        """Lightning's text progress bar (on stderr) unless the config picks one: its rich bar (the default when rich
        is installed) proxies stderr, and under Jupyter that proxy recurses with the steps' bar (RecursionError)."""
        trainer = self._get(self.config_init, "trainer", default={})
        chosen = trainer.get("callbacks") or []
        chosen = chosen if isinstance(chosen, list) else [chosen]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in chosen):
            kwargs["callbacks"] = [*chosen, StderrProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def progress(self) -> str:
        """"N of M generations done in FOLDER"."""
        done = len(self.run_folder.done())
        items = getattr(getattr(self, "datamodule", None), "items", None)
        total = f" of {len(items) * self.model.samples_per_target}" if items is not None else ""
        return f"{done}{total} generations done in {self.run_folder.path}"

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        parser.set_defaults({"return_predictions": False})  # images go to disk, not into memory
        return parser


class StderrProgressBar(TQDMProgressBar):
    """Lightning's text bar on stderr, beside the steps' bar (it writes to stdout): stdout keeps the summary lines,
    readable in a log."""

    def init_predict_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):  # Lightning's bar takes sys.stdout as it is made
            return super().init_predict_tqdm()


def check_before_loading(config) -> None:
    """Checks that need no model weights, run before any is loaded: the data sources (feature files are read, images
    only found) and the sampling schedule (scheduler config only)."""
    data = config.get("data")
    if data and data.get("class_path") and issubclass(import_object(data.class_path), TargetData):
        TargetData.check_sources(**dict(data.get("init_args") or {}))
    model = config.get("model")
    prior = model.get("init_args", {}).get("prior") if model else None
    if not prior or not prior.get("class_path") or "num_inference_steps" not in model.init_args:
        return
    cls = import_object(prior.class_path)
    args = dict(prior.get("init_args") or {})
    if not (isinstance(cls, type) and issubclass(cls, DiffusionPrior)) or "pretrained" not in args:
        return
    default = inspect.signature(cls).parameters.get("scheduler")
    name = args.get("scheduler", default.default if default is not None else "diffusers.DDIMScheduler")
    scheduler = load_scheduler(args["pretrained"], name, args.get("scheduler_config"),
                               args.get("scheduler_subfolder", "scheduler"))
    # FLUX's shift (mu) follows from the image size, known once the prior has loaded; the order and range of the
    # timesteps, which are checked here, do not depend on it
    check_timesteps(scheduler, model.init_args.num_inference_steps,
                    schedule={"mu": 0.0} if scheduler.config.get("use_dynamic_shifting") else None)


def main(args=None) -> None:
    """Console entry point: config errors end in one line naming the key; a stop signal, at any moment, in one line
    saying what is done (exit 128 + signal number); a run with failed generations exits 1; other errors keep their
    traceback. The run folder's lock is released on every way out."""
    FeatInvCLI.latest = None
    owned = STOP.install()  # from here on a signal stops the run (at once until the guided loop defers it)
    try:
        cli = explained(run, args)
    except StopRequested as stop:
        settle(FeatInvCLI.latest)
        if first_process():
            print(f"lit-featinv: {stop}: {progress(FeatInvCLI.latest)}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    finally:
        if FeatInvCLI.latest is not None and hasattr(FeatInvCLI.latest, "run_folder"):
            FeatInvCLI.latest.run_folder.release()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # else gloo's threads abort the exit at times (pytorch#190489)
        if owned:
            STOP.end(process_ends=args is None)  # called with args: in a process that goes on
    summary = next((c.summary for c in cli.trainer.callbacks if isinstance(c, InversionWriter)), None)
    if summary and (summary["failed"] or summary["unreadable"]):
        raise SystemExit(f"lit-featinv: {summary['failed']} generation(s) failed and {len(summary['unreadable'])} "
                         f"target image(s) were unreadable (above); the rest is written")


def explained(job, args):
    """``job(args)``, with a config error or one the config parser raises as one line (SystemExit)."""
    try:
        return job(args)
    except argparse.ArgumentError as err:  # a key or class the config parser cannot take
        raise SystemExit(f"lit-featinv: error: {parse_error(err)}") from None
    except Exception as err:
        root = config_error(err)
        if root is None:
            raise
        raise SystemExit(f"lit-featinv: error: {root}") from err


def settle(cli: FeatInvCLI | None, timeout: float = 10.0) -> None:
    """After a stop, wait for the processes that this one's launcher started (DDP ranks; they had the signal too) and
    kill those still running then (one waiting in a collective for this one), so that the stop's line comes last."""
    trainer = getattr(cli, "trainer", None)
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    writer = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, InversionWriter)), None)
    for proc in getattr(launcher, "procs", None) or getattr(writer, "children", []):  # the writer took them on a stop
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def progress(cli: FeatInvCLI | None) -> str:
    """What a stopped run has done, and how to go on."""
    if cli is None or not hasattr(cli, "run_folder"):
        return NOTHING_YET
    return f"{cli.progress()}; rerun the same command to resume"


def nested_nulls(args: list[str]) -> list[str]:
    """``--A.init_args.B.init_args.key null`` -> ``--A.init_args.B {"init_args": {"key": null}}``: jsonargparse (4.53)
    reads ``null`` given to a key of a class nested in another class's init_args as the string 'None'."""
    out, i = [], 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        width = 1 if eq else 2
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        prefix, _, name = key.rpartition(".init_args.")
        if key.startswith("--") and ".init_args." in prefix and "." not in name and value == "null":
            out += [prefix, json.dumps({"init_args": {name: None}})]
            i += width
        else:
            out.append(args[i])
            i += 1
    return out


# third-party lines that say nothing about this job (LIT_FEATINV_VERBOSE=1 keeps them)
NOISE = ("litlogger",  # Lightning's tip to install its cloud logger
         "`isinstance(treespec, LeafSpec)` is deprecated",  # Lightning 2.6 on torch 2.10+, at every batch
         "LightningCLI's args parameter is intended")  # run(args) from a notebook, whose argv is the kernel's


class Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


def quiet(info: bool = False) -> None:
    """Drop :data:`NOISE` from Lightning's log and from warnings, and unless ``info`` (the CLI keeps them) Lightning's
    info lines too ("GPU available: ...", its tips); nothing when ``LIT_FEATINV_VERBOSE`` is set. The Python API's
    ``lit_featinv.app.quiet()``."""
    if os.environ.get("LIT_FEATINV_VERBOSE"):
        return
    for name in () if info else ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, Quiet) for f in logger.filters):
            logger.addFilter(Quiet())
    for text in NOISE:
        warnings.filterwarnings("ignore", message=".*" + re.escape(text))


def run(args=None) -> FeatInvCLI:
    """Build the CLI and run the subcommand (``predict``)."""
    quiet(info=True)
    if args is None:  # as typed (LightningCLI warns when given args and argv)
        sys.argv[1:] = nested_nulls(presets.config_args(sys.argv[1:]))
    else:
        args = nested_nulls(presets.config_args(list(args)))
    return FeatInvCLI(FeatureInversion, TargetData, subclass_mode_model=True, subclass_mode_data=True,
                      auto_configure_optimizers=False, trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                      save_config_callback=None, args=args,  # the run folder keeps the config (runfolder.py)
                      parser_kwargs={"exit_on_error": False,  # main() prints a parse error as one line
                                     "description": "Generate images whose features match target features "
                                                    "(guided diffusion). Example: lit-featinv predict --config "
                                                    "quickstart (a preset: lit-featinv presets; or a YAML file)"})


if __name__ == "__main__":
    main()
