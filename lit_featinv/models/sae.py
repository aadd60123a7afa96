"""Sparse-autoencoder latents as the feature: any extractor's feature encoded by an SAE's encoder,
``f_sae(x) = act(W_enc^T (f(x) - b_dec) + b_enc)``, differentiable, so the guidance can match or maximise latents.

The weights are a state dict (safetensors, ``torch.save``, or saev's checkpoint: one JSON line, then ``torch.save``) in
one of the layouts of the SAE libraries for vision, read from their public code:

- ``saelens``: jbloomAus/SAELens @ 91ca16c, ``sae_lens/saes/sae.py`` (``W_enc`` [d_in, d_sae], ``b_enc``, ``W_dec``
  [d_sae, d_in], ``b_dec``; ``process_sae_in`` subtracts ``b_dec`` when ``apply_b_dec_to_input``, its default),
  ``topk_sae.py`` (TopK: the top k pre-activations, ReLU'd), ``jumprelu_sae.py`` (``threshold`` [d_sae]).
- ``saev``: OSU-NLP-Group/saev @ 3d73f1f, ``src/saev/nn/modeling.py`` (the same names and shapes; ``encode`` is
  ``x @ W_enc + b_enc``, no ``b_dec`` subtraction since e7ca004, July 2025: set ``subtract_decoder_bias: true`` for
  SAEs trained before; ``TopKActivation`` keeps the top k pre-activations without a ReLU; ``BatchTopKActivation`` in
  eval is a JumpReLU with the scalar buffer ``activation.threshold``; ``dump`` writes the JSON header line).
- ``overcomplete``: KempnerInstitute/overcomplete @ a1781af, ``overcomplete/sae/`` (the default ``linear`` encoder,
  ``factory.py``/``modules.py``: ``encoder.final_block.0`` an ``nn.Linear``, weight [d_sae, d_in], then ReLU;
  ``topk_sae.py``: top k of the ReLU'd codes; ``jump_sae.py``: ``thresholds`` stored as log-thresholds;
  ``dictionary.py``: ``dictionary._weights`` [d_sae, d_in], no decoder bias). Other encoders (MLP, attention) are not
  supported.

An SAE trained on normalised activations (SAELens ``normalize_activations``) needs the normalisation folded into its
weights first (SAELens ``fold_activation_norm_scaling_factor``).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .extractors import FeatureExtractor
from .loading import check_source, load_state_dict


@dataclass(frozen=True)
class Layout:
    """Where one SAE library keeps the encoder and decoder in its state dict, and how it applies them."""

    w_enc: str
    b_enc: str
    w_dec: str
    b_dec: str | None  # None: the library has no decoder bias
    threshold: str | None  # JumpReLU thresholds ([d_sae] or one scalar)
    enc_out_first: bool = False  # W_enc stored as an nn.Linear weight, [d_sae, d_in]
    log_threshold: bool = False  # the file stores log(threshold)
    subtract_b_dec: bool = False  # the library's default for subtracting b_dec before the encoder
    topk_relu: bool = True  # its TopK keeps the top k pre-activations ReLU'd (False: as they are)
    encoder_prefix: str | None = None  # keys under it other than w_enc, b_enc: an encoder this layout cannot run


LAYOUTS = {
    "saelens": Layout("W_enc", "b_enc", "W_dec", "b_dec", "threshold", subtract_b_dec=True),
    "saev": Layout("W_enc", "b_enc", "W_dec", "b_dec", "activation.threshold", topk_relu=False),
    "overcomplete": Layout("encoder.final_block.0.weight", "encoder.final_block.0.bias", "dictionary._weights", None,
                           "thresholds", enc_out_first=True, log_threshold=True, encoder_prefix="encoder."),
}


def layout_of(layout: str, key: str = "model.extractor.layout") -> Layout:
    if layout not in LAYOUTS:
        raise ConfigError(key, f"{layout!r} is not one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def read_state(weights: str, key: str = "model.extractor.weights") -> dict:
    """A state dict from a safetensors or ``torch.save`` file, or a saev checkpoint (a JSON line, then ``torch.save``)."""
    path = check_source(weights, key)
    with open(path, "rb") as f:
        if f.read(1) != b"{":  # safetensors starts with its header's length, torch.save with a zip header
            return load_state_dict(path, key)
        f.seek(0)
        f.readline()
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def read_sae(weights: str, layout: str = "saelens", key: str = "model.extractor.weights") -> dict:
    """An SAE's parameters in SAELens' orientation, float32: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec``
    [d_sae, d_in] (row c: latent c's decoder direction in the input space), ``b_dec`` [d_in] (zeros where the layout
    has none), ``threshold`` ([d_sae], a scalar, or None)."""
    spec, state = layout_of(layout), read_state(weights, key)
    source = os.fspath(weights)
    missing = [name for name in (spec.w_enc, spec.b_enc, spec.w_dec) if name not in state]
    if missing:
        raise ConfigError(key, f"{source!r} has no {missing}: not a {layout} SAE (its keys: {sorted(state)[:8]})")
    other = [k for k in state if spec.encoder_prefix and k.startswith(spec.encoder_prefix)
             and k not in (spec.w_enc, spec.b_enc)]
    if other:
        raise ConfigError(key, f"{source!r} has an encoder beyond one linear layer ({other[:4]}): only the "
                               f"{layout} linear encoder is supported")
    w_enc = state[spec.w_enc].float()
    w_enc = (w_enc.T if spec.enc_out_first else w_enc).contiguous()
    d_in, d_sae = w_enc.shape
    b_dec = state.get(spec.b_dec) if spec.b_dec else None
    threshold = state.get(spec.threshold) if spec.threshold else None
    threshold = None if threshold is None else threshold.float().exp() if spec.log_threshold else threshold.float()
    params = {"W_enc": w_enc, "b_enc": state[spec.b_enc].float(), "W_dec": state[spec.w_dec].float(),
              "b_dec": torch.zeros(d_in) if b_dec is None else b_dec.float(), "threshold": threshold}
    shapes = {"b_enc": [(d_sae,)], "W_dec": [(d_sae, d_in)], "b_dec": [(d_in,)], "threshold": [(d_sae,), (), (1,)]}
    wrong = [f"{name} {list(params[name].shape)}" for name, allowed in shapes.items()
             if params[name] is not None and tuple(params[name].shape) not in allowed]
    if wrong:
        raise ConfigError(key, f"{source!r}: {', '.join(wrong)} do not fit W_enc [{d_in}, {d_sae}] ({layout} layout)")
    return params


def relu(z: torch.Tensor, sae: SAEExtractor) -> torch.Tensor:
    return z.relu()


def topk(z: torch.Tensor, sae: SAEExtractor) -> torch.Tensor:
    """The k largest pre-activations of each row (ReLU'd unless the layout keeps them as they are), zeros elsewhere."""
    values, index = z.topk(sae.k, dim=1)
    return torch.zeros_like(z).scatter(1, index, values.relu() if sae.topk_relu else values)


def jumprelu(z: torch.Tensor, sae: SAEExtractor) -> torch.Tensor:
    """``z * (z > threshold)``; a threshold below 0 counts as 0 (SAELens' ReLU before its mask, saev's eval)."""
    return z * (z > sae.threshold.clamp_min(0))


ACTIVATIONS = {"relu": relu, "topk": topk, "jumprelu": jumprelu}


class SAEExtractor(FeatureExtractor):
    """A sparse autoencoder's latent code of another extractor's feature (``base``): ``act(W_enc^T (f(x) - b_dec) +
    b_enc)``, float32, differentiable. Layouts, and where each was read: the module docstring.

    Args:
        base: the extractor whose feature the SAE was trained on (its preprocessing and precision are its own).
        weights: the SAE's state dict: ``.safetensors``, a ``torch.save`` file, or a saev checkpoint.
        layout: ``saelens``, ``saev`` or ``overcomplete``: the parameter names and how the library applies them.
        activation: ``relu``, ``topk`` (``k`` largest pre-activations, the rest 0) or ``jumprelu`` (``z * (z >
            threshold)``, the thresholds from the file).
        k: latents kept by ``topk``.
        latents: the latent indices to keep as the feature (None: the whole code).
        pre_activation: the feature is ``W_enc^T (f(x) - b_dec) + b_enc`` before the activation: what a maximisation
            should climb, since a latent that is off (ReLU, not in the top k) has no gradient.
        subtract_decoder_bias: subtract ``b_dec`` before the encoder; None: the layout's default (SAELens: true, as its
            ``apply_b_dec_to_input``; saev: false; Overcomplete has no ``b_dec``).
    """

    def __init__(self, base: FeatureExtractor, weights: str, layout: str = "saelens", activation: str = "relu",
                 k: int | None = None, latents: list[int] | None = None, pre_activation: bool = False,
                 subtract_decoder_bias: bool | None = None):
        spec = layout_of(layout)
        if activation not in ACTIVATIONS:
            raise ConfigError("model.extractor.activation", f"{activation!r} is not one of {list(ACTIVATIONS)}")
        params = read_sae(weights, layout)
        d_in, d_sae = params["W_enc"].shape
        if (activation == "topk") != (k is not None) or (k is not None and not 1 <= k <= d_sae):
            raise ConfigError("model.extractor.k", f"{k} does not fit activation {activation!r}: topk takes a k in "
                                                   f"1..{d_sae} (the SAE's latents), the others none")
        if activation == "jumprelu" and params["threshold"] is None:
            raise ConfigError("model.extractor.activation", f"jumprelu needs thresholds, and {os.fspath(weights)!r} "
                                                            f"has no {spec.threshold!r}")
        bad = [i for i in latents or () if not 0 <= i < d_sae]
        if bad:
            raise ConfigError("model.extractor.latents", f"{bad} out of range of the SAE's {d_sae} latents "
                                                         f"(0..{d_sae - 1})")
        super().__init__(base, base.preprocess, None, None, latents, autocast=False)
        self.activation, self.k, self.pre_activation, self.topk_relu = activation, k, pre_activation, spec.topk_relu
        self.subtract = spec.subtract_b_dec if subtract_decoder_bias is None else subtract_decoder_bias
        self.d_in, self.d_sae = d_in, d_sae
        for name, value in params.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def base(self) -> FeatureExtractor:
        return self.network

    def encode(self, f: torch.Tensor) -> torch.Tensor:
        """The code [B, d_sae] of base features ``f`` [B, d_in] (the pre-activation with ``pre_activation``)."""
        if f.shape[1] != self.d_in:
            raise ConfigError("model.extractor.weights", f"the SAE takes {self.d_in}-d features (W_enc [{self.d_in}, "
                                                         f"{self.d_sae}]), but model.extractor.base gives "
                                                         f"{f.shape[1]}-d ones")
        z = (f - self.b_dec if self.subtract else f) @ self.W_enc + self.b_enc
        return z if self.pre_activation else ACTIVATIONS[self.activation](z, self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.base(images)
        with torch.autocast(images.device.type, enabled=False):  # the SAE in float32 under any precision
            return self.select_features(self.encode(f.float()))

    def decoder_direction(self, latent: int) -> torch.Tensor:
        """Latent ``latent``'s decoder row ``W_dec[latent]`` [d_in]: a direction in the base feature space (a
        ``lit_featinv.Direction`` target for the base extractor, saved with ``torch.save``)."""
        if not 0 <= latent < self.d_sae:
            raise ConfigError("latent", f"{latent} is out of range of the SAE's {self.d_sae} latents")
        return self.W_dec[latent].detach().clone()
