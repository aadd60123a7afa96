"""A fixed prompt as tensors: the text encoders of the newer priors (CLIP with its pooled output, T5), computed as
diffusers' pipelines compute them, and files of prompt embeddings (to condition a prior without loading its
text encoders)."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from .loading import check_source, load_pretrained

FORMAT = "lit_featinv.prompt_embeds/1"


def tokenize(pretrained: str, prompt: str, subfolder: str, max_length: int | None, key: str, loader, positions: int):
    """``prompt`` as token ids [1, max_length] (padded, truncated) by the tokenizer in ``subfolder`` (its own
    ``model_max_length`` when ``max_length`` is None); an error naming ``key`` when the folder holds no usable one."""
    folder = check_source(pretrained, key)
    if os.path.isdir(folder) and not os.path.isdir(os.path.join(folder, subfolder)):  # transformers would build an
        raise ConfigError(key, f"{pretrained!r} has no {subfolder}/ (its tokenizer)")      # empty tokenizer instead
    tokenizer = load_pretrained(loader, pretrained, key, subfolder=subfolder)
    length = max_length or tokenizer.model_max_length
    if length > positions:  # transformers builds an empty tokenizer where the files are missing
        raise ConfigError(key, f"{pretrained!r} has no usable {subfolder}/ (max length {length} > the text encoder's "
                               f"{positions} positions)")
    return tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def clip_text(pretrained: str, prompt: str, subfolder: str, tokenizer: str, key: str, projection: bool,
              max_length: int | None = None):
    """A CLIP text encoder's output for ``prompt`` (``output_hidden_states``): ``hidden_states[-2]`` is what SDXL
    and SD3 condition on; ``[0]`` is ``text_embeds`` (with ``projection``: CLIPTextModelWithProjection) or the last
    hidden state, ``pooler_output`` the pooled one (FLUX)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    model = load_pretrained(CLIPTextModelWithProjection if projection else CLIPTextModel, pretrained, key,
                            subfolder=subfolder, torch_dtype=torch.float32).eval()
    ids = tokenize(pretrained, prompt, tokenizer, max_length, key, CLIPTokenizer, model.config.max_position_embeddings)
    return model(ids, output_hidden_states=True)


@torch.no_grad()
def t5_text(pretrained: str, prompt: str, subfolder: str, tokenizer: str, max_length: int, key: str) -> torch.Tensor:
    """A T5 encoder's last hidden state [1, max_length, d_model] for ``prompt``, padded to ``max_length`` tokens."""
    from transformers import T5EncoderModel, T5TokenizerFast

    model = load_pretrained(T5EncoderModel, pretrained, key, subfolder=subfolder, torch_dtype=torch.float32).eval()
    positions = getattr(model.config, "n_positions", None) or max_length  # relative positions: any length
    ids = tokenize(pretrained, prompt, tokenizer, max_length, key, T5TokenizerFast, positions)
    return model(ids)[0].float()


def save_prompt_embeds(path: str | os.PathLike, embeds: dict[str, torch.Tensor], prior: str, pretrained: str,
                       prompt: str) -> None:
    """Write a prior's prompt embeddings (and what they were made from) to a ``.pt`` file."""
    record = {"format": FORMAT, "prior": prior, "pretrained": str(pretrained), "prompt": prompt}
    torch.save(record | {name: value.detach().float().cpu().contiguous() for name, value in embeds.items()}, path)


def load_prompt_embeds(path: str | os.PathLike, key: str = "model.prior.prompt_embeds") -> dict:
    """A file of :func:`save_prompt_embeds`: its tensors and its ``prompt``; an error naming ``key`` for anything
    else."""
    path = check_source(str(path), key)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file it cannot read
        raise ConfigError(key, f"cannot read {str(path)!r} as a prompt-embeddings file: {err}") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(key, f"{str(path)!r} is not a prompt-embeddings file (write one with lit-featinv "
                               f"encode-prompt)")
    return record


def check_embeds(embeds: dict, dims: dict[str, tuple[int, ...]], source: str, key: str) -> None:
    """Each embedding has the shape the denoiser takes: ``dims`` gives the trailing sizes after the batch of 1 (and, for
    [1, tokens, D], any number of tokens: -1)."""
    for name, want in dims.items():
        value = embeds.get(name)
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        if got is None or len(got) != len(want) + 1 or got[0] != 1 or any(
                w not in (-1, g) for w, g in zip(want, got[1:])) or not value.is_floating_point():
            shape = "(1, " + ", ".join("N" if w == -1 else str(w) for w in want) + ")"
            raise ConfigError(key, f"{source}: {name} is {got or 'missing'}, the denoiser takes {shape}")
