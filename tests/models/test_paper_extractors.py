"""The paper's target networks (open_clip CLIP, torchvision ResNet / ViT), tiny or random: features, layers,
preprocessing from each model's own eval transform, and text targets."""
import numpy as np
import torch.nn.functional as F
import open_clip
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms._presets import ImageClassification

from conftest import batch_of, targets_of, write_images
from lit_featinv.errors import ConfigError
from lit_featinv import (DiffusionPrior, FeatureInversion, ModuleExtractor, OpenClipExtractor, TargetData,
                         TimmExtractor, TorchvisionExtractor)
from lit_featinv.method.measure import to_uint8
from lit_featinv.method.measure import match_metrics


def test_open_clip_feature_is_the_unnormalised_image_embedding(open_clip_name):
    torch.manual_seed(0)
    ext = OpenClipExtractor(open_clip_name)
    assert ext.preprocess.size == (32, 32) and ext.preprocess.interpolation == "bicubic"
    torch.testing.assert_close(ext.preprocess.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ext(x), ext.network.encode_image(ext.preprocess(x)))
        assert ext(torch.rand(1, 1, 48, 40)).shape == (1, 16)  # gray, other size: converted, resized, cropped


def test_open_clip_preprocessing_matches_its_eval_transform(open_clip_name):
    _, _, transform = open_clip.create_model_and_transforms(open_clip_name)
    ext = OpenClipExtractor(open_clip_name)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 7), 128 + 50 * np.sin((xx + yy) / 11)], -1)
    image = Image.fromarray(smooth.astype(np.uint8))
    ours = ext.preprocess(torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float() / 255)[0]
    theirs = transform(image)
    assert ours.shape == theirs.shape == (3, 32, 32)
    assert (ours - theirs).abs().max() < 0.03  # PIL vs antialiased tensor bicubic


def test_open_clip_layer_and_text_embedding(open_clip_name):
    ext = OpenClipExtractor(open_clip_name, layer="visual.layer4", pool="max", select=[0, 3])
    assert ext(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(ConfigError, match="data.prompts: .*layer: null"):
        ext.encode_text(["a dog"])
    ext = OpenClipExtractor(open_clip_name)
    tokens = open_clip.get_tokenizer(open_clip_name)(["a dog", "a cat"])
    with torch.no_grad():
        torch.testing.assert_close(ext.encode_text(["a dog", "a cat"]), ext.network.encode_text(tokens))


def test_open_clip_unknown_tag_names_the_key(open_clip_name):
    with pytest.raises(ConfigError, match="model.extractor: cannot create open_clip model"):
        OpenClipExtractor(open_clip_name, pretrained="no-such-tag")
    with pytest.raises(ConfigError, match="model.extractor.pretrained"):
        OpenClipExtractor(open_clip_name, pretrained="missing/weights.pt")


def test_open_clip_weights_offline_name_the_key(offline_hub):
    """RN50/openai (the paper's CLIP) with no network and an empty cache: one message naming the key and the file."""
    with pytest.raises(ConfigError, match=r"model.extractor.pretrained: cannot load 'timm/resnet50_clip.openai' "
                                           r"\(open_clip RN50-quickgelu, pretrained='openai'\) for the extractor: .*"
                                           r"`hf download timm/resnet50_clip.openai`.*point model.extractor.pretrained "
                                           r"at the local file"):
        OpenClipExtractor("RN50-quickgelu", pretrained="openai")


def test_torchvision_weights_offline_name_the_key_then_load_from_the_hub_cache(tmp_path, monkeypatch):
    """No network: one message with the key, the URL and the cache folder; a file put there is then used."""
    import urllib.error
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(ConfigError, match=rf"model.extractor.weights: cannot download resnet18 IMAGENET1K_V1 from "
                                           rf"{url}; without a network, put that file in {tmp_path}/hub/checkpoints"):
        TorchvisionExtractor("resnet18", weights="IMAGENET1K_V1")
    torch.manual_seed(1)
    weights = torchvision.models.resnet18().state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(weights, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    ext = TorchvisionExtractor("resnet18", weights="IMAGENET1K_V1")
    torch.testing.assert_close(ext.network.conv1.weight, weights["conv1.weight"])


def test_torchvision_default_is_the_penultimate_feature_with_the_weights_transform():
    torch.manual_seed(0)
    ext = TorchvisionExtractor("resnet18")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    ref.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 100, 130)
    transform = ImageClassification(crop_size=224)  # what weights.transforms() gives for ResNets (IMAGENET1K_V1)
    assert ext.preprocess.size == (224, 224) and ext.preprocess.interpolation == "bilinear"
    with torch.no_grad():
        torch.testing.assert_close(ext.preprocess(x), transform(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ext(x), ref(transform(x)), atol=1e-4, rtol=1e-4)


def test_torchvision_vit_penultimate_is_the_class_token():
    torch.manual_seed(0)
    ext = TorchvisionExtractor("vit_b_16", model_kwargs={"image_size": 32})
    assert isinstance(ext.network.heads.head, torch.nn.Identity) and ext.preprocess.size == (32, 32)
    torch.manual_seed(0)
    ref = torchvision.models.vit_b_16(image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        class_token = ref.encoder(torch.cat([ref.class_token, ref._process_input(ext.preprocess(x))], 1))[:, 0]
        torch.testing.assert_close(ext(x), class_token)


def test_torchvision_layer_is_a_graph_node():
    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    seen = {}
    ref.layer3.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    torch.manual_seed(0)
    ext = TorchvisionExtractor("resnet18", layer="layer3", pool="max", select=[1, 5])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref(ext.preprocess(x))
        torch.testing.assert_close(ext(x), seen["out"].amax((2, 3))[:, [1, 5]])
    assert TorchvisionExtractor("resnet18", layer="layer1.0.relu_1", pool=None)(x).shape == (1, 64 * 56 * 56)
    with pytest.raises(ConfigError, match="model.extractor.layer: no node or module 'layer9'"):
        TorchvisionExtractor("resnet18", layer="layer9")
    with pytest.raises(ConfigError, match="model.extractor.weights: 'NOPE' is not one of"):
        TorchvisionExtractor("resnet18", weights="NOPE")


Q = {"quantize": True}
EXTRACTORS = {
    "timm": lambda names: TimmExtractor(f"local-dir:{names['timm']}", preprocess=Q),
    "module": lambda names: ModuleExtractor(torchvision.models.resnet18(num_classes=10),
                                            preprocess={"resize": 32, "crop": 32, **Q}),
    "open_clip": lambda names: OpenClipExtractor(names["open_clip"], preprocess=Q),
    "torchvision": lambda names: TorchvisionExtractor("resnet18", preprocess=Q),
}


@pytest.mark.parametrize("kind", list(EXTRACTORS))
def test_a_real_image_scores_its_own_feature(kind, pixel_prior, timm_dir, open_clip_name, tmp_path):
    """Reference and generated images take the same path: an 8-bit image scores cosine 1 to its own target."""
    torch.manual_seed(0)
    extractor = EXTRACTORS[kind]({"timm": timm_dir, "open_clip": open_clip_name})
    module = FeatureInversion(DiffusionPrior(str(pixel_prior)), extractor, progress=False)
    write_images(tmp_path, count=2, size=40, mode="RGB")
    batch = batch_of(tmp_path)
    target = targets_of(module, batch)
    with torch.no_grad():
        images = torch.stack([to_uint8(image[None])[0] for image in batch["image"]])
        cosine = match_metrics(module.extractor(images.float() / 255), target)["cosine"]
    torch.testing.assert_close(cosine, torch.ones(2), atol=1e-5, rtol=0)


def test_prompts_from_a_list_or_a_file(tmp_path):
    (tmp_path / "prompts.txt").write_text("a dog\n\n  a cat  \n")
    for prompts in (["a dog", "a cat"], str(tmp_path / "prompts.txt")):
        data = TargetData(prompts=prompts)
        data.setup()
        batch = next(iter(data.predict_dataloader()))
        assert batch["id"] == ["prompt_00000", "prompt_00001"] and batch["text"] == ["a dog", "a cat"]
        assert batch["image"] == [None, None] and batch["feature"] == [None, None]
    with pytest.raises(ConfigError, match="data.prompts"):
        TargetData(prompts=str(tmp_path / "missing.txt")).setup()


def test_text_targets_use_encode_text_or_name_the_key(tmp_path, open_clip_name, timm_dir, pixel_prior):
    write_images(tmp_path / "img", count=1, size=16, mode="RGB")
    data = TargetData(images=str(tmp_path / "img"), prompts=["a dog"])
    data.setup()
    batch = next(iter(data.predict_dataloader()))
    module = FeatureInversion(DiffusionPrior(str(pixel_prior)), OpenClipExtractor(open_clip_name), progress=False)
    target = targets_of(module, batch)
    torch.testing.assert_close(target[1], module.extractor.encode_text(["a dog"])[0])
    torch.testing.assert_close(target[0], module.extractor(batch["image"][0][None])[0])
    module = FeatureInversion(DiffusionPrior(str(pixel_prior)), TimmExtractor(f"local-dir:{timm_dir}"), progress=False)
    with pytest.raises(ConfigError, match="data.prompts: text targets need an extractor with encode_text"):
        targets_of(module, batch)


def test_resnet50_preset_preprocesses_as_the_authors():
    """configs/paper/resnet50.yaml: a generated 512x512 image is resized straight to 224 (bicubic, no crop); a reference
    image takes Resize(224, bicubic) + CenterCrop(224), not weights.transforms() (Resize(256, bilinear) + crop)."""
    import yaml
    from torchvision.transforms import v2
    from conftest import ROOT
    preset = yaml.safe_load((ROOT / "configs" / "paper" / "resnet50.yaml").read_text())
    options = preset["model"]["init_args"]["extractor"]["init_args"]["preprocess"]
    assert options["quantize"] and not options["clamp"]
    ext = TorchvisionExtractor("resnet18", preprocess={**options, "quantize": False})  # rounding checked elsewhere
    mean, std = ext.preprocess.mean, ext.preprocess.std
    generated = torch.rand(1, 3, 512, 512)
    straight = F.interpolate(generated, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ext.preprocess(generated), (straight - mean) / std)
    authors = v2.Compose([v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                          v2.CenterCrop(224), v2.Normalize(mean.flatten().tolist(), std.flatten().tolist())])
    reference = torch.rand(1, 3, 300, 451)
    torch.testing.assert_close(ext.preprocess(reference), authors(reference))
    pil = Image.fromarray((reference[0].permute(1, 2, 0) * 255).round().byte().numpy())
    theirs = authors(v2.functional.pil_to_tensor(v2.functional.center_crop(v2.functional.resize(
        pil, 224, interpolation=v2.InterpolationMode.BICUBIC), 224)).float()[None] / 255)
    # the authors' references went through PIL: within a few 8-bit levels of the tensor path (noise image: worst case)
    assert (ext.preprocess(to_uint8(reference).float() / 255) - theirs).abs().mean() * std.mean() < 0.02


def test_vit_h14_preset_enlarges_512_to_518_as_the_authors():
    """configs/paper/vit_h14*.yaml: the weights' transform (518 px, bicubic, antialias on) with the preset's overrides
    enlarges a generated 512 px image as the authors' ``TF.resize`` of a tensor without antialiasing (torch's
    antialiased bicubic would differ: another kernel); a larger reference image is still reduced with antialiasing."""
    import yaml
    from torchvision.models import ViT_H_14_Weights
    from torchvision.transforms import v2
    from conftest import ROOT
    from lit_featinv import Preprocess
    transform = ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()
    own = {"resize": transform.resize_size[0], "crop": transform.crop_size[0], "antialias": transform.antialias,
           "interpolation": transform.interpolation.value, "mean": transform.mean, "std": transform.std}
    assert own["resize"] == own["crop"] == 518 and own["antialias"] and own["interpolation"] == "bicubic"
    for name in ("vit_h14", "vit_h14_fast"):
        preset = yaml.safe_load((ROOT / "configs" / "paper" / f"{name}.yaml").read_text())
        options = preset["model"]["init_args"]["extractor"]["init_args"]["preprocess"]
        preprocess = Preprocess.with_overrides(own, {**options, "quantize": False})  # rounding checked elsewhere
        mean, std = preprocess.mean, preprocess.std
        generated = torch.rand(1, 3, 512, 512)
        authors = v2.functional.resize(generated, 518, interpolation=v2.InterpolationMode.BICUBIC, antialias=False)
        torch.testing.assert_close(preprocess(generated), (authors - mean) / std)
        aa = v2.functional.resize(generated, 518, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        assert (aa - authors).abs().max() > 1e-3  # what the enlargement would have been with the filter
        reference = torch.rand(1, 3, 600, 600)
        reduced = v2.functional.resize(reference, 518, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        torch.testing.assert_close(preprocess(reference), (reduced - mean) / std)
