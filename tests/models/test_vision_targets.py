"""Modern targets through the existing extractors: DINOv2 (class token, mean of patch tokens, register variants) and
SigLIP (timm and open_clip), each with its own preprocessing from its model's config.

Tiny random networks built from the real model names (so the real pretrained configs, and with them the real
preprocessing, stay), only shrunk in depth and width: no weights, no network.
"""
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_data_config

from conftest import documentation

from lit_featinv import OpenClipExtractor, TimmExtractor
from lit_featinv.errors import ConfigError

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # keeps patch size, input size and pretrained cfg
DINOV2 = "vit_base_patch14_dinov2.lvd142m"
DINOV2_REG = "vit_base_patch14_reg4_dinov2.lvd142m"
SIGLIP = "vit_base_patch16_siglip_224.webli"
MEAN_PATCH = {"global_pool": "avg", "fc_norm": False}  # DINOv2's x_norm_patchtokens.mean(1)


def smooth_image(h: int, w: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 7), 128 + 50 * np.sin((xx + yy) / 11)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float() / 255


def save_weights(network: torch.nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return str(path)


def tiny_timm(name: str, **kwargs) -> TimmExtractor:
    """A tiny random timm ``name`` (its real pretrained cfg, hence its real preprocessing)."""
    torch.manual_seed(0)
    return TimmExtractor(name, pretrained=False, model_kwargs={**TINY, **kwargs})


def pretrained_from(network, tmp_path, name: str, preprocess: dict | None = None, **kwargs) -> TimmExtractor:
    """``name`` with ``network``'s weights loaded through timm's pretrained path (its checkpoint filter, strict)."""
    file = save_weights(network, tmp_path / "weights.safetensors")
    return TimmExtractor(name, pretrained=True, preprocess=preprocess,
                         model_kwargs={**TINY, **kwargs, "pretrained_cfg_overlay": {"file": file}})


@pytest.mark.parametrize("name, prefix", [(DINOV2, 1), (DINOV2_REG, 5)])
def test_dinov2_class_token_and_mean_of_patch_tokens(name, prefix, tmp_path):
    cls = tiny_timm(name)
    mean = pretrained_from(cls.network, tmp_path, name, **MEAN_PATCH)  # same weights, mean of patch tokens
    net = cls.network
    assert net.num_prefix_tokens == prefix and net.num_reg_tokens == prefix - 1
    assert isinstance(mean.network.norm, torch.nn.LayerNorm) and isinstance(mean.network.fc_norm, torch.nn.Identity)
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        tokens = net.forward_features(cls.preprocess(x))  # [B, 1 + registers + 37 * 37, D], after the final norm
        assert tokens.shape == (2, prefix + 37 * 37, 32)
        torch.testing.assert_close(cls(x), tokens[:, 0])
        torch.testing.assert_close(mean(x), tokens[:, prefix:].mean(1))  # class and register tokens excluded
        if prefix > 1:
            assert not torch.allclose(mean(x), tokens[:, 1:].mean(1))


def test_dinov2_avg_pool_alone_does_not_load_dinov2_weights(tmp_path):
    """``global_pool: avg`` alone moves timm's final norm after the pooling (fc_norm), a layer DINOv2 has not."""
    with pytest.raises(ConfigError, match=r"(?s)model.extractor.model_name.*Missing key.*fc_norm"):
        pretrained_from(tiny_timm(DINOV2).network, tmp_path, DINOV2, global_pool="avg")


@pytest.mark.parametrize("name", [DINOV2, DINOV2_REG])
def test_dinov2_preprocessing_is_its_eval_transform(name):
    real = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    assert (real["input_size"], real["interpolation"], real["crop_pct"]) == ((3, 518, 518), "bicubic", 1.0)
    assert real["mean"] == IMAGENET_DEFAULT_MEAN and real["std"] == IMAGENET_DEFAULT_STD
    for ext in (tiny_timm(name), tiny_timm(name, **MEAN_PATCH)):
        pre = ext.preprocess
        assert (pre.resize_to, pre.crop, pre.interpolation, pre.in_chans) == (518, (518, 518), "bicubic", 3)
        torch.testing.assert_close(pre.mean.flatten(), torch.tensor(IMAGENET_DEFAULT_MEAN))
        torch.testing.assert_close(pre.std.flatten(), torch.tensor(IMAGENET_DEFAULT_STD))
    image = smooth_image(600, 700)  # downscaled to 518 on the shorter side, center crop 518 x 518
    theirs = create_transform(**real)(image)
    ours = pre(to_tensor(image))[0]
    assert ours.shape == theirs.shape == (3, 518, 518)
    assert (ours - theirs).abs().max() < 0.05  # PIL vs antialiased tensor bicubic, in normalised units


def test_siglip_timm_is_the_attention_pooled_embedding():
    ext = tiny_timm(SIGLIP)
    net = ext.network
    assert net.global_pool == "map" and net.num_prefix_tokens == 0 and net.attn_pool is not None
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        tokens = net.forward_features(ext.preprocess(x))  # [B, 14 * 14, D], no class token
        assert tokens.shape == (2, 196, 32)
        torch.testing.assert_close(ext(x), net.attn_pool(tokens))
    real = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(SIGLIP).to_dict())
    assert (real["input_size"], real["interpolation"], real["crop_pct"]) == ((3, 224, 224), "bicubic", 0.9)
    pre = ext.preprocess  # timm's eval transform: shorter side to floor(224 / 0.9) = 248, center crop 224
    assert (pre.resize_to, pre.crop, pre.interpolation) == (248, (224, 224), "bicubic")
    torch.testing.assert_close(pre.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(pre.std.flatten(), torch.full((3,), 0.5))


@pytest.fixture
def tiny_siglip_open_clip(tmp_path, monkeypatch) -> str:
    """``local-dir:`` folder laid out as the hub's ``timm/ViT-B-16-SigLIP``: open_clip's own ViT-B-16-SigLIP config
    (timm trunk, ``map`` pooling, no projection) shrunk, the ``webli`` tag's preprocessing, weights."""
    real_create = timm.create_model

    def shrunk(name, *args, **kwargs):  # open_clip builds its timm trunk without size arguments
        tiny = name.startswith("vit_base_patch16_siglip")
        return real_create(name, *args, **({**TINY, **kwargs} if tiny else kwargs))

    monkeypatch.setattr(timm, "create_model", shrunk)
    cfg = open_clip.get_model_config("ViT-B-16-SigLIP")
    assert cfg["vision_cfg"]["timm_pool"] == "map" and cfg["vision_cfg"]["timm_proj"] == "none"
    cfg["embed_dim"] = TINY["embed_dim"]
    text = {k: v for k, v in cfg["text_cfg"].items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs")}
    cfg["text_cfg"] = {**text, "context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    webli = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli")
    preprocess = {k: webli[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    folder = tmp_path / "siglip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights there yet: random
    save_weights(model, folder / "open_clip_model.safetensors")
    return f"local-dir:{folder}"


def test_siglip_open_clip_embedding_and_preprocessing(tiny_siglip_open_clip, tmp_path):
    ext = OpenClipExtractor(tiny_siglip_open_clip)
    pre = ext.preprocess  # SigLIP's own: squash to 224 x 224 (no crop), bicubic, mean = std = 0.5
    assert (pre.resize_to, pre.crop, pre.interpolation) == ((224, 224), (224, 224), "bicubic")
    torch.testing.assert_close(pre.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(pre.std.flatten(), torch.full((3,), 0.5))
    image = smooth_image(150, 260)  # not square: squashed, not cropped
    cfg = open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(ext.network))
    theirs = open_clip.transform.image_transform_v2(cfg, is_train=False)(image)
    ours = pre(to_tensor(image))[0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().max() < 0.05

    trunk = ext.network.visual.trunk
    assert trunk.global_pool == "map" and sum(p.numel() for p in trunk.parameters()) < 100_000
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ext(x), ext.network.encode_image(pre(x)))
        torch.testing.assert_close(ext(x), trunk.attn_pool(trunk.forward_features(pre(x))))
        # timm's vit_base_patch16_siglip_224 with these weights and SigLIP's squash resize: the same embedding
        timm_ext = pretrained_from(trunk, tmp_path, SIGLIP, preprocess={"resize": [224, 224]})
        torch.testing.assert_close(timm_ext(x), ext(x))


def test_siglip_open_clip_weights_file_needs_siglip_preprocessing_given(tiny_siglip_open_clip, tmp_path):
    """A built-in name with a weights file (no tag): open_clip falls back to CLIP's preprocessing (OpenAI mean and std,
    shorter side + center crop), so SigLIP's is given as overrides."""
    folder = tiny_siglip_open_clip[len("local-dir:"):]
    config = tmp_path / "tiny-sl-weights-test.json"  # no "siglip" in the name: open_clip would fetch its T5 tokenizer
    config.write_text(json.dumps(json.loads(Path(folder, "open_clip_config.json").read_text())["model_cfg"]))
    open_clip.add_model_config(config)
    weights = f"{folder}/open_clip_model.safetensors"
    plain = OpenClipExtractor("tiny-sl-weights-test", pretrained=weights)
    assert (plain.preprocess.resize_to, plain.preprocess.crop) == (224, (224, 224))
    torch.testing.assert_close(plain.preprocess.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    siglip = {"resize": [224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    ext, ref = OpenClipExtractor("tiny-sl-weights-test", pretrained=weights, preprocess=siglip), \
        OpenClipExtractor(tiny_siglip_open_clip)
    for name in ("resize_to", "crop", "interpolation", "antialias"):
        assert getattr(ext.preprocess, name) == getattr(ref.preprocess, name)
    x = torch.rand(2, 3, 30, 50)
    with torch.no_grad():
        torch.testing.assert_close(ext(x), ref(x))


@pytest.mark.parametrize("build", [
    lambda: tiny_timm(DINOV2), lambda: tiny_timm(DINOV2_REG, **MEAN_PATCH), lambda: tiny_timm(SIGLIP)],
    ids=["dinov2-cls", "dinov2-reg4-mean-patch", "siglip-timm"])
def test_features_are_differentiable_in_the_image(build):
    check_gradient(build())


def test_siglip_open_clip_is_differentiable_in_the_image(tiny_siglip_open_clip):
    check_gradient(OpenClipExtractor(tiny_siglip_open_clip))


def check_gradient(ext):
    images = torch.rand(2, 3, 40, 40, requires_grad=True)
    f = ext(images)
    assert f.shape == (2, 32) and f.dtype == torch.float32
    (grad,) = torch.autograd.grad(f.square().sum(), images)
    assert torch.isfinite(grad).all() and grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert not any(p.requires_grad for p in ext.parameters())


def readme_extractors() -> dict:
    """The block of DINOv2 and SigLIP extractors in docs/extractors.md ("DINOv2 and SigLIP"), parsed."""
    import yaml
    text = documentation()
    block = next(b.split("```", 1)[0] for b in text.split("```yaml\n")[1:] if "dinov2_cls:" in b)
    return yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))


def test_readme_dinov2_and_siglip_extractors_build_as_documented():
    """Each timm entry of the block in docs/extractors.md, built with random weights (tiny), takes the preprocessing and pooling
    its comment states; the open_clip entry names a model and tag open_clip knows."""
    specs = readme_extractors()
    assert set(specs) == {"dinov2_cls", "dinov2_patch_mean", "dinov2_reg4", "siglip_timm", "siglip_open_clip"}
    built = {}
    for key, spec in specs.items():
        args = dict(spec["init_args"])
        if spec["class_path"] == "lit_featinv.OpenClipExtractor":
            assert args["pretrained"] in open_clip.list_pretrained_tags_by_model(args["model_name"])
            continue
        assert spec["class_path"] == "lit_featinv.TimmExtractor"
        torch.manual_seed(0)
        built[key] = TimmExtractor(**args | {"pretrained": False,
                                             "model_kwargs": {**TINY, **(args.get("model_kwargs") or {})}})
    for key in ("dinov2_cls", "dinov2_patch_mean", "dinov2_reg4"):
        pre = built[key].preprocess
        assert (pre.resize_to, pre.crop, pre.interpolation) == (518, (518, 518), "bicubic")
    assert built["dinov2_patch_mean"].network.global_pool == "avg" and built["dinov2_reg4"].network.num_reg_tokens == 4
    siglip = built["siglip_timm"]
    assert siglip.network.global_pool == "map" and siglip.preprocess.interpolation == "bicubic"
    assert siglip.preprocess.resize_to == (224, 224) and siglip(torch.rand(1, 3, 300, 200)).shape == (1, 32)
    torch.testing.assert_close(siglip.preprocess.mean.flatten(), torch.full((3,), 0.5))


def test_open_clip_tokenizer_is_made_at_the_first_text_not_with_the_model(tiny_siglip_open_clip, monkeypatch):
    """SigLIP's tokenizer is a hub download: an image-only run (the SD 3.5 Large Turbo preset's) must not need it."""
    import open_clip
    made = []
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name: made.append(name) or (lambda texts: None))
    ext = OpenClipExtractor(tiny_siglip_open_clip)
    assert made == []
    assert ext.tokenizer is ext.tokenizer and made == [tiny_siglip_open_clip]
