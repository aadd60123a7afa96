import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from lit_featinv.errors import ConfigError
from lit_featinv import ModuleExtractor, TimmExtractor


def test_timm_default_is_the_pooled_pre_logits_feature(timm_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}")
    ref = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected = ref.forward_head(ref.forward_features((x - 0.5) / 0.25), pre_logits=True)
        torch.testing.assert_close(ext(x), expected)
    assert ext.preprocess.size == (16, 16) and ext.preprocess.in_chans == 1


def test_timm_block_through_forward_intermediates(timm_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}", layer=1, pool="avg")
    ref = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        block = ref.forward_intermediates((x - 0.5) / 0.25, indices=[1], intermediates_only=True)[0]
        torch.testing.assert_close(ext(x), block.mean((2, 3)))


def test_named_layer_channel_subset_and_pooling(timm_dir):
    ref = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    name = [n for n, _ in ref.named_children()][0]
    seen = {}
    getattr(ref, name).register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        ref((x - 0.5) / 0.25)
        ext = TimmExtractor(f"local-dir:{timm_dir}", layer=name, pool="max", select=[0, 2])
        torch.testing.assert_close(ext(x), seen["out"].amax((2, 3))[:, [0, 2]])
        flat = TimmExtractor(f"local-dir:{timm_dir}", layer=name, pool=None)(x)
    assert flat.shape == (1, seen["out"][0].numel())


def test_unknown_layer_names_the_key(timm_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}", layer="no_such_block")
    with pytest.raises(ConfigError, match="model.extractor.layer"):
        ext(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_module_extractor_loads_weights_and_takes_a_submodule(tmp_path, suffix):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    path = tmp_path / f"w{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(net.state_dict(), str(path))
    torch.manual_seed(1)
    ext = ModuleExtractor(torchvision.models.resnet18(weights=None, num_classes=10), weights=str(path),
                          layer="avgpool", preprocess={"resize": 32, "crop": 32})
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(net.children())[:-1])
        torch.testing.assert_close(ext(x), trunk((x - mean) / std).flatten(1))
        assert ext(torch.rand(1, 1, 64, 48)).shape == (1, 512)  # gray, other size: converted and resized


def test_module_extractor_errors_name_the_key(tmp_path):
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(ConfigError, match="model.extractor.weights"):
        ModuleExtractor(net, weights=str(tmp_path / "missing.pt"))
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="model.extractor.weights"):
        ModuleExtractor(net, weights=str(tmp_path / "bad.pt"))


def test_extractors_are_frozen_and_stay_in_eval(timm_dir):
    ext = TimmExtractor(f"local-dir:{timm_dir}")
    ext.train()
    assert not ext.network.training
    assert not any(p.requires_grad for p in ext.parameters())


def test_missing_local_timm_folder(tmp_path):
    with pytest.raises(ConfigError, match="model.extractor.model_name"):
        TimmExtractor(f"local-dir:{tmp_path / 'nope'}")
