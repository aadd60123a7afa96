"""Target features [N, D] of a batch of targets (as :func:`lit_featinv.runs.data.collate` makes it), in float32: a
feature file's vector as given, the extractor's feature of a target image or of a text (its ``encode_text``), or a
construction's vector built from its parts' features (:mod:`.constructions`)."""
from __future__ import annotations

import torch

from ..errors import ConfigError


@torch.no_grad()
def target_features(extractor, batch: dict, device, feature_dim: int | None = None) -> torch.Tensor:
    """The batch's target features on ``device``; ``feature_dim``: the extractor's feature size, to check feature
    files against (None: not known yet)."""
    none = [None] * len(batch["id"])
    texts = batch.get("text") or none
    encoded = iter(encode_text(extractor, [text for text in texts if text is not None]))
    rows = []
    for image, feature, source, text, construction, parts, index in zip(
            batch["image"], batch["feature"], batch["source"], texts, batch.get("construction") or none,
            batch.get("parts") or none, batch.get("index") or none):
        if text is not None:
            f = next(encoded)
        elif construction is not None:
            f = constructed_feature(extractor, construction, parts, index, device, feature_dim)
        elif feature is None:
            f = extractor.measure(image[None].to(device))[0]
        else:
            f = feature.to(device).float()
            check_feature_size(f, source, feature_dim)
        if not torch.isfinite(f).all():
            raise ConfigError("data", f"{source}: target feature contains NaN or Inf")
        rows.append(f)
    return torch.stack(rows)


def constructed_feature(extractor, construction, parts: list[dict], index: int, device, feature_dim: int | None,
                        chunk: int = 32) -> torch.Tensor:
    """``construction.build`` of its parts' features: an image part's is the extractor's feature, as an image
    target's (images of one size together, ``chunk`` at a time), a feature file's as given (its size checked)."""
    features = [None if p["image"] is not None else p["feature"].to(device).float() for p in parts]
    by_size = {}
    for k, p in enumerate(parts):
        if p["image"] is not None:
            by_size.setdefault(tuple(p["image"].shape), []).append(k)
    for ks in by_size.values():
        for i in range(0, len(ks), chunk):
            images = torch.stack([parts[k]["image"] for k in ks[i: i + chunk]]).to(device)
            for k, f in zip(ks[i: i + chunk], extractor.measure(images)):
                features[k] = f
    size = feature_dim or features[0].numel()
    for p, f in zip(parts, features):
        if f.numel() != size:
            given = (f"the extractor (model.extractor) gives {size}" if feature_dim else
                     f"{parts[0]['source']} has {size}")
            raise ConfigError(p["key"], f"{p['source']}: feature has {f.numel()} values, but {given}")
    return construction.build(features, index)


def check_feature_size(feature: torch.Tensor, source: str, feature_dim: int | None) -> None:
    """A feature-file target has as many values as the extractor's feature (once that is known)."""
    if feature_dim is not None and feature.numel() != feature_dim:
        raise ConfigError("data.features", f"{source}: target feature has {feature.numel()} values, but the "
                                           f"extractor (model.extractor) gives {feature_dim}")


def encode_text(extractor, texts: list[str]) -> torch.Tensor:
    """Text targets [N, D] through the extractor's ``encode_text`` (e.g. CLIP's text tower)."""
    if not texts:
        return torch.empty(0)
    check_text_targets(extractor, "data.prompts")
    return extractor.encode_text(texts).float()


def check_text_targets(extractor, key: str) -> None:
    """Text targets need an extractor with ``encode_text``; ``key``: where they were given."""
    if not hasattr(extractor, "encode_text"):
        raise ConfigError(key, f"text targets need an extractor with encode_text (e.g. lit_featinv."
                               f"OpenClipExtractor); {type(extractor).__name__} has none")
