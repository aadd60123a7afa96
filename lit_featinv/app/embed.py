"""``lit-featinv encode-prompt``: a prior's prompt embeddings written to a file, so that the prior
(``model.init_args.prior.init_args.prompt_embeds: FILE``) runs without loading its text encoders (FLUX.1's and
SD 3.x's T5-XXL among them): encode once where memory allows, generate on a smaller card."""
from __future__ import annotations

import argparse
import inspect
import sys

PREFIX = "lit-featinv encode-prompt"
PRIORS = ("lit_featinv.StableDiffusionXLPrior", "lit_featinv.StableDiffusion3Prior", "lit_featinv.FluxPrior")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PREFIX, description="Encode a prompt with a prior's text encoders and write "
                                                              "the file its prompt_embeds option reads.")
    parser.add_argument("--prior", required=True, help=f"the prior's class path ({', '.join(PRIORS)})")
    parser.add_argument("--pretrained", required=True, help="hub id or local model folder (its text encoders)")
    parser.add_argument("--prompt", default="", help="the prompt (default: empty)")
    parser.add_argument("--out", required=True, help="the file to write (.pt)")
    parser.add_argument("--max-sequence-length", type=int, default=None,
                        help="T5 tokens (lit_featinv.FluxPrior; default: the prior's own, FluxPipeline's 512; "
                             "FLUX.1-schnell's model card runs 256)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, encode, write ``--out``; a bad input ends in one line naming its option (exit status 1)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ..config import import_object
    from ..errors import ConfigError
    from ..models.conditioned import PromptConditionedPrior, check_denoiser, write_prompt_embeds

    try:
        try:
            prior = import_object(args.prior, "lit_featinv")
        except ValueError as err:
            raise ConfigError("--prior", str(err)) from None
        if not (isinstance(prior, type) and issubclass(prior, PromptConditionedPrior)):
            raise ConfigError("--prior", f"{args.prior!r} is not a prior with text encoders ({', '.join(PRIORS)})")
        check_denoiser(args.pretrained, prior.subfolder, prior.__name__, prior.denoiser, "--pretrained", **prior.fields)
        if args.max_sequence_length is not None and "max_sequence_length" not in \
                inspect.signature(prior.encode_prompt).parameters:
            raise ConfigError("--max-sequence-length", f"{args.prior} takes no T5 token count")
        extra = {} if args.max_sequence_length is None else {"max_sequence_length": args.max_sequence_length}
        embeds = write_prompt_embeds(prior, args.pretrained, args.prompt, args.out, key="--pretrained", **extra)
    except ConfigError as err:
        raise SystemExit(f"{PREFIX}: error: {err}") from None
    except OSError as err:  # the output file
        raise SystemExit(f"{PREFIX}: error: --out: {err}") from None
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in embeds.items())
    print(f"lit_featinv: prompt embeddings of {args.prompt!r} ({shapes}) in {args.out}; give it as "
          f"model.init_args.prior.init_args.prompt_embeds")
