"""``lit-featinv predict --config FILE.yaml``: LightningCLI with the Trainer defaults this job needs."""
from __future__ import annotations

import json
import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .backbones import DiffusionPrior, load_scheduler
from .data import TargetData
from .errors import ConfigError
from .loading import import_object
from .module import FeatureInversion
from .sampling import check_timesteps
from .writer import InversionWriter

TRAINER_DEFAULTS = {
    "inference_mode": False,  # the guidance needs gradients
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}

CONFIG_KEYS = ("model.", "data.", "writer.", "trainer.")


class FeatInvCLI(LightningCLI):
    """Only ``predict``: nothing is trained. The writer is always on (``writer.*`` keys)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(InversionWriter, "writer")

    def before_instantiate_classes(self) -> None:
        check_before_loading(self.config[self.subcommand])

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        parser.set_defaults({"return_predictions": False})  # images go to disk, not into memory
        return parser


def check_before_loading(config) -> None:
    """Checks that need no model weights, run before any is loaded: the sampling schedule (scheduler config only)."""
    model = config.get("model")
    backbone = model.get("init_args", {}).get("backbone") if model else None
    if not backbone or not backbone.get("class_path") or "num_inference_steps" not in model.init_args:
        return
    cls = import_object(backbone.class_path)
    args = dict(backbone.get("init_args") or {})
    if not (isinstance(cls, type) and issubclass(cls, DiffusionPrior)) or "pretrained" not in args:
        return
    scheduler = load_scheduler(args["pretrained"], args.get("scheduler", "diffusers.DDIMScheduler"),
                               args.get("scheduler_config"), args.get("scheduler_subfolder", "scheduler"))
    check_timesteps(scheduler, model.init_args.num_inference_steps)


def config_error(err: BaseException) -> BaseException | None:
    """The innermost error in the chain of ``err`` that names a config key (jsonargparse and our loaders wrap)."""
    found = None
    while err is not None:
        found = err if isinstance(err, ConfigError) or str(err).strip("'\"").startswith(CONFIG_KEYS) else found
        err = err.__cause__ or err.__context__
    return found


def main(args=None) -> None:
    """Console entry point: config errors end in one line naming the key; other errors keep their traceback."""
    try:
        run(args)
    except Exception as err:
        root = config_error(err)
        if root is None:
            raise
        raise SystemExit(f"lit-featinv: error: {str(root).strip(chr(39) + chr(34))}") from err


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


def run(args=None) -> FeatInvCLI:
    """Build the CLI and run the subcommand (``predict``)."""
    if args is None:
        sys.argv[1:] = nested_nulls(sys.argv[1:])  # as typed (LightningCLI warns when given args and argv)
    else:
        args = nested_nulls(list(args))
    return FeatInvCLI(FeatureInversion, TargetData, subclass_mode_model=True, subclass_mode_data=True,
                      auto_configure_optimizers=False, trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                      save_config_kwargs={"overwrite": True}, args=args,
                      parser_kwargs={"description": "Generate images whose features match target features "
                                                    "(guided diffusion). Example: lit-featinv predict --config "
                                                    "configs/quickstart.yaml"})


if __name__ == "__main__":
    main()
