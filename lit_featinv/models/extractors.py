"""Feature extractors: a frozen vision network (and layer) as a differentiable map image -> feature vector.

Every extractor takes images in [0, 1] (any channel count, any size), applies its network's own
preprocessing differentiably (:class:`~lit_featinv.models.preprocess.Preprocess`; ``preprocess`` overrides any of its
arguments) and returns float32 features of shape [B, D]. Subclass :class:`FeatureExtractor` to add a model family.
"""
from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .loading import check_source, load_state_dict, require_hub
from .preprocess import Preprocess, center_crop_transform


class _Captured(Exception):
    """Raised by a forward hook to stop the network once the wanted layer has run."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def first_tensor(output):
    """A module output (tensor, tuple, list or dict) -> its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return first_tensor(next(iter(values)))


def capture(network: nn.Module, layer: str, run):
    """Run ``run()`` and return the output of ``network``'s submodule ``layer``; later layers are skipped."""
    modules = dict(network.named_modules())
    if layer not in modules:
        near = [n for n in modules if n and (layer in n or n in layer)][:10] or list(modules)[1:11]
        raise ConfigError("model.extractor.layer", f"no submodule {layer!r}; e.g. {near}")

    def hook(module, args, output):
        raise _Captured(first_tensor(output))

    handle = modules[layer].register_forward_hook(hook)
    try:
        run()
    except _Captured as done:
        return done.output
    finally:
        handle.remove()
    raise ConfigError("model.extractor.layer", f"submodule {layer!r} did not run in the forward pass")


def check_local_dir(model_name: str) -> None:
    """Fail early, naming the key, when a ``local-dir:FOLDER`` model name points nowhere (timm, open_clip)."""
    if model_name.startswith("local-dir:"):
        check_source(model_name[len("local-dir:"):], "model.extractor.model_name")


def check_hub_name(model_name: str) -> None:
    """An ``hf-hub:ORG/NAME`` model name (timm, open_clip) that is not cached with no hub to fetch it from: one line."""
    if model_name.startswith("hf-hub:"):
        require_hub(model_name[len("hf-hub:"):].partition("@")[0], "model.extractor.model_name",
                    local="folder (local-dir:FOLDER)")


def timm_hub_id(model_name: str, model_kwargs: dict) -> str | None:
    """The hub id timm reads ``model_name``'s pretrained weights from; None: a file, a URL or a name timm lacks."""
    from timm.models import get_pretrained_cfg

    if ":" in model_name or get_pretrained_cfg(model_name) is None:  # local-dir:, hf-hub: (check_hub_name), unknown
        return None
    try:
        from timm.models._builder import _resolve_pretrained_source, resolve_pretrained_cfg
        cfg = resolve_pretrained_cfg(model_name, model_kwargs.get("pretrained_cfg"),
                                     model_kwargs.get("pretrained_cfg_overlay"))
        source, location = _resolve_pretrained_source(cfg.to_dict())
    except Exception:  # timm's internals moved: create_model loads as it would have
        return None
    return (location[0] if isinstance(location, tuple) else location) if source == "hf-hub" else None


class FeatureExtractor(nn.Module):
    """A frozen network + its preprocessing; ``forward(images in [0, 1]) -> features [B, D]``.

    ``forward`` is the guidance path (differentiable); :meth:`measure` gives the float32 features that targets,
    best-image choice and reported metrics use.

    Args:
        network: the vision network.
        preprocess: its input transform.
        layer: name of a submodule whose output is the feature (None: the network's output).
        pool: how to reduce a spatial map [B, C, H, W]: ``avg``, ``max`` or None (flatten).
        select: indices of the (flattened, pooled) feature to keep: a channel or neuron subset.
        autocast: run the guidance forward and backward under the Trainer's mixed precision (e.g. bf16); False:
            float32 whatever the precision (the authors ran ResNet-50 and ViT-H/14 in float32).
    """

    def __init__(self, network: nn.Module, preprocess: Preprocess, layer: str | None = None,
                 pool: str | None = "avg", select: list[int] | None = None, autocast: bool = False):
        super().__init__()
        if pool not in ("avg", "max", None):
            raise ConfigError("model.extractor.pool", f"{pool!r} is not one of 'avg', 'max', null")
        self.network = network.requires_grad_(False).eval()
        self.preprocess = preprocess
        self.layer, self.pool, self.autocast = layer, pool, autocast
        self.select = list(select) if select is not None else None

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm and dropout stay in eval mode

    def run_network(self, x: torch.Tensor):
        """The network's forward on preprocessed input (override for a model's own feature head)."""
        return self.network(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return first_tensor(self.run_network(x))
        return capture(self.network, self.layer, lambda: self.run_network(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with nullcontext() if self.autocast else torch.autocast(images.device.type, enabled=False):
            f = self.features(self.preprocess(images))
        if f.ndim == 4 and self.pool == "avg":
            f = f.mean((2, 3))
        elif f.ndim == 4 and self.pool == "max":
            f = f.amax((2, 3))
        return self.select_features(f.flatten(1).float())

    @torch.no_grad()
    def measure(self, images: torch.Tensor) -> torch.Tensor:
        """Features [B, D] in float32 under any precision setting: for targets, scores and metrics."""
        with torch.autocast(images.device.type, enabled=False):
            return self(images.float())

    def select_features(self, f: torch.Tensor) -> torch.Tensor:
        """Keep the ``select`` subset of features [B, D] (all when None)."""
        return f[:, self.select] if self.select is not None else f


class TimmExtractor(FeatureExtractor):
    """A timm model (hub name or ``local-dir:FOLDER``), preprocessing from its pretrained config.

    Args:
        model_name: timm name, e.g. ``resnet50.a1_in1k`` or ``local-dir:assets/zoo/fmnist-resnet10t``.
        pretrained: load its weights.
        layer: None for the pooled pre-classifier feature; an int for block ``layer`` through timm's
            ``forward_intermediates`` (blocks after it are pruned); a string for a named submodule.
        preprocess: overrides of the model's own eval transform, any :class:`~lit_featinv.models.preprocess.Preprocess`
            argument (``resize``, ``crop``, ``interpolation``, ``antialias``, ``quantize``, ``clamp``, ``mean``, ...).
        model_kwargs: extra ``timm.create_model`` arguments.
    """

    def __init__(self, model_name: str, pretrained: bool = True, layer: int | str | None = None,
                 pool: str | None = "avg", select: list[int] | None = None, preprocess: dict | None = None,
                 autocast: bool = False, model_kwargs: dict | None = None):
        import timm
        from timm.data import resolve_data_config

        check_local_dir(model_name)
        check_hub_name(model_name)
        if pretrained and (repo := timm_hub_id(model_name, model_kwargs or {})):
            require_hub(repo, "model.extractor.model_name", f" (timm {model_name})", "folder (local-dir:FOLDER)")
        try:
            network = timm.create_model(model_name, pretrained=pretrained, **(model_kwargs or {}))
        except RuntimeError as err:
            raise ConfigError("model.extractor.model_name", f"cannot create timm model {model_name!r}: {err}") from err
        cfg = resolve_data_config(model=network)
        own = center_crop_transform(cfg["input_size"][1:], cfg.get("crop_pct", 1.0), interpolation=cfg["interpolation"],
                                    mean=cfg["mean"], std=cfg["std"], in_chans=cfg["input_size"][0])
        block = layer if isinstance(layer, int) else None
        if block is not None:
            network.prune_intermediate_layers([block], prune_head=True)
        super().__init__(network, Preprocess.with_overrides(own, preprocess), layer if isinstance(layer, str) else None,
                         pool, select, autocast)
        self.block = block

    def run_network(self, x: torch.Tensor):
        if self.block is not None:
            return self.network.forward_intermediates(x, indices=[self.block], intermediates_only=True)[0]
        return self.network.forward_head(self.network.forward_features(x), pre_logits=True)


class ModuleExtractor(FeatureExtractor):
    """Any torch module (built from ``class_path`` + ``init_args``), weights from a state-dict file.

    Args:
        module: the network, e.g. ``{class_path: torchvision.models.ResNet, init_args: {...}}``.
        weights: a ``.safetensors`` or ``torch.save`` state dict (None: the module's own init).
        preprocess: its input transform (:class:`~lit_featinv.models.preprocess.Preprocess` arguments) over the default:
            3 channels, shorter side to 224 (bilinear), center crop 224x224, ImageNet mean and std.
    """

    DEFAULT_TRANSFORM = {"resize": 224, "crop": (224, 224), "interpolation": "bilinear", "in_chans": 3,
                         "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

    def __init__(self, module: nn.Module, weights: str | None = None, layer: str | None = None,
                 pool: str | None = "avg", select: list[int] | None = None, preprocess: dict | None = None,
                 autocast: bool = False, strict: bool = True):
        if weights is not None:
            try:
                module.load_state_dict(load_state_dict(weights), strict=strict)
            except RuntimeError as err:
                raise ConfigError("model.extractor.weights",
                                  f"{os.fspath(weights)!r} does not fit the module: {err}") from err
        super().__init__(module, Preprocess.with_overrides(self.DEFAULT_TRANSFORM, preprocess), layer, pool, select,
                         autocast)


class OpenClipExtractor(FeatureExtractor):
    """An open_clip model's image encoder (``encode_image``, not normalised), preprocessing from its config.

    Text prompts give targets in the same space through :meth:`encode_text` (``data.prompts``).

    Args:
        model_name: open_clip name (``RN50-quickgelu`` for OpenAI's RN50), ``hf-hub:ORG/NAME`` or ``local-dir:FOLDER``.
        pretrained: weight tag (e.g. ``openai``) or checkpoint file; None: random weights.
        layer: a submodule of the CLIP model, e.g. ``visual.layer4`` (None: the image embedding).
        preprocess: overrides of the model's own eval transform, any :class:`~lit_featinv.models.preprocess.Preprocess`
            argument (``resize``, ``crop``, ``interpolation``, ``antialias``, ``quantize``, ``clamp``, ``mean``, ...).
        autocast: the authors ran CLIP in float16 (OpenAI's ``clip.load`` on CUDA): true runs it under the Trainer's
            mixed precision.
        model_kwargs: extra ``open_clip.create_model`` arguments.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, layer: str | None = None,
                 pool: str | None = "avg", select: list[int] | None = None, preprocess: dict | None = None,
                 autocast: bool = False, model_kwargs: dict | None = None):
        import open_clip
        from open_clip.transform import PreprocessCfg

        check_local_dir(model_name)
        if pretrained and Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            pretrained = os.path.expanduser(pretrained)
            if not os.path.isfile(pretrained):
                raise ConfigError("model.extractor.pretrained", f"no such file {pretrained!r} (cwd: {os.getcwd()})")
        check_hub_name(model_name)
        hub = open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub", "") if pretrained else ""
        if hub:  # 'ORG/NAME/' or 'ORG/NAME/FILE', which open_clip prefers to the tag's URL
            require_hub(os.path.split(hub)[0], "model.extractor.pretrained",
                        f" (open_clip {model_name}, pretrained={pretrained!r})", "file")
        try:
            network = open_clip.create_model(model_name, pretrained=pretrained, **(model_kwargs or {}))
        except (OSError, RuntimeError, ValueError) as err:
            raise ConfigError("model.extractor", f"cannot create open_clip model {model_name!r} with pretrained="
                                                 f"{pretrained!r}: {err}") from err
        cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(network))
        if cfg.resize_mode not in ("shortest", "squash"):
            raise ConfigError("model.extractor", f"open_clip resize_mode {cfg.resize_mode!r} is not supported")
        size = (cfg.size, cfg.size) if isinstance(cfg.size, int) else tuple(cfg.size)
        own = {"resize": min(size) if cfg.resize_mode == "shortest" else size, "crop": size, "in_chans": 3,
               "interpolation": cfg.interpolation, "mean": cfg.mean, "std": cfg.std}
        super().__init__(network, Preprocess.with_overrides(own, preprocess), layer, pool, select, autocast)
        self.model_name = model_name

    @functools.cached_property
    def tokenizer(self):
        """open_clip's tokenizer of the model, made at the first text (SigLIP's is a hub download: images need none)."""
        import open_clip
        return open_clip.get_tokenizer(self.model_name)

    def run_network(self, x: torch.Tensor):
        return self.network.encode_image(x)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings [N, D] (``encode_text``, not normalised): targets in the image embedding's space."""
        if self.layer is not None:
            raise ConfigError("data.prompts", "text targets live in the joint embedding; set "
                                              "model.extractor.layer: null")
        tokens = self.tokenizer(texts).to(self.preprocess.mean.device)
        with torch.autocast(tokens.device.type, enabled=False):  # targets are float32 under any precision
            return self.select_features(self.network.encode_text(tokens).float())


def last_linear(network: nn.Module) -> str:
    """Name of the network's last ``nn.Linear`` (in definition order): the classifier of torchvision models."""
    names = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ConfigError("model.extractor.layer", "the model has no Linear classifier to drop; name a layer")
    return names[-1]


def graph_node(network: nn.Module, node: str) -> nn.Module:
    """The network up to ``node`` (a torch.fx node or module name), returning ``{node: output}``."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    try:
        return create_feature_extractor(network, return_nodes=[node])
    except ValueError as err:
        names = get_graph_node_names(network)[1]
        near = [n for n in names if node in n or n in node][:10] or names[-10:]
        raise ConfigError("model.extractor.layer", f"no node or module {node!r}; e.g. {near}") from err


class TorchvisionExtractor(FeatureExtractor):
    """A torchvision classification model, preprocessing from its weights' eval transform (``weights.transforms()``).

    Args:
        model_name: ``torchvision.models.get_model`` name, e.g. ``resnet50``, ``vit_h_14``.
        weights: weight enum name, e.g. ``IMAGENET1K_V1`` or ``IMAGENET1K_SWAG_E2E_V1`` (downloaded to the torch hub
            cache); None: random weights, torchvision's default ImageNet preprocessing at the model's input size.
        layer: a graph node or module name (``torchvision.models.feature_extraction.get_graph_node_names``), e.g.
            ``layer4`` or ``layer4.2.relu_2``; later layers are dropped. None: the penultimate feature (the input
            of the last Linear layer, e.g. ``fc`` of a ResNet, ``heads.head`` of a ViT).
        preprocess: overrides of the model's own eval transform, any :class:`~lit_featinv.models.preprocess.Preprocess`
            argument (``resize``, ``crop``, ``interpolation``, ``antialias``, ``quantize``, ``clamp``, ``mean``, ...).
        model_kwargs: extra ``get_model`` arguments.
    """

    def __init__(self, model_name: str, weights: str | None = None, layer: str | None = None,
                 pool: str | None = "avg", select: list[int] | None = None, preprocess: dict | None = None,
                 autocast: bool = False, model_kwargs: dict | None = None):
        from torchvision.models import get_model, get_model_weights
        from torchvision.transforms._presets import ImageClassification

        try:
            choices = get_model_weights(model_name)
            enum = choices[weights] if weights else None
        except ValueError as err:
            raise ConfigError("model.extractor.model_name", f"{err}") from err
        except KeyError:
            raise ConfigError("model.extractor.weights",
                              f"{weights!r} is not one of {list(choices.__members__)}") from None
        try:
            network = get_model(model_name, weights=enum, **(model_kwargs or {}))
        except OSError as err:  # the download failed
            raise ConfigError("model.extractor.weights", f"cannot download {model_name} {weights} from {enum.url}; "
                                                         f"without a network, put that file in "
                                                         f"{torch.hub.get_dir()}/checkpoints. {err}") from err
        size = getattr(network, "image_size", 224)
        transform = enum.transforms() if enum else ImageClassification(crop_size=size, resize_size=max(256, size))
        own = {"resize": transform.resize_size[0], "crop": transform.crop_size[0], "antialias": transform.antialias,
               "interpolation": transform.interpolation.value, "mean": transform.mean, "std": transform.std}
        if layer is None:
            network.set_submodule(last_linear(network), nn.Identity())
        else:
            network = graph_node(network, layer)
        super().__init__(network, Preprocess.with_overrides(own, preprocess), None, pool, select, autocast)


def load_matrix(path: str, key: str = "model.extractor.matrix") -> torch.Tensor:
    """The one 2-d tensor [m, D] of a ``.safetensors`` or ``.pt`` file, finite, float32."""
    path = check_source(path, key)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        found = load_file(path)
    else:
        found = torch.load(path, map_location="cpu", weights_only=True)
    tensors = list(found.values()) if isinstance(found, dict) else [found]
    if len(tensors) != 1 or not torch.is_tensor(tensors[0]) or tensors[0].ndim != 2:
        shapes = [list(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in tensors]
        raise ConfigError(key, f"{os.fspath(path)!r} must hold one 2-d tensor [m, D]; it holds {shapes}")
    matrix = tensors[0].float()
    bad = int((~torch.isfinite(matrix)).sum())
    if bad:
        raise ConfigError(key, f"{os.fspath(path)!r} has {bad} non-finite value(s) of {matrix.numel()}")
    return matrix


class LinearExtractor(FeatureExtractor):
    """A linear feature A x of the image in the prior's [-1, 1] space, flattened row-major (C, H, W): a feature whose
    null space is known, so that its posterior under :class:`~lit_featinv.GaussianMixturePrior` is exact. A target
    PNG maps as x = value / 127.5 - 1.

    Args:
        matrix: a ``.safetensors`` or ``.pt`` file holding one tensor A [m, D], D = C * H * W of the images.
        select: rows of A to keep.
    """

    def __init__(self, matrix: str, select: list[int] | None = None):
        super().__init__(nn.Identity(), nn.Identity(), None, None, select)
        self.source = os.fspath(matrix)
        self.register_buffer("matrix", load_matrix(matrix))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1).float() * 2 - 1
        if x.shape[1] != self.matrix.shape[1]:
            shape = "x".join(map(str, images.shape[1:]))
            raise ConfigError("model.extractor.matrix", f"{self.source!r} is {list(self.matrix.shape)}: its width "
                                                        f"{self.matrix.shape[1]} is not the images' D = {shape} = "
                                                        f"{x.shape[1]}")
        with torch.autocast(images.device.type, enabled=False):
            return self.select_features(x @ self.matrix.T)
