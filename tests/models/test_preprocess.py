import torch
import torch.nn.functional as F

from lit_featinv.models.preprocess import Preprocess, match_channels, straight_through_round


def test_straight_through_round_rounds_forward_and_passes_gradient():
    x = torch.tensor([0.1234, 0.5, 1.2, -0.1], requires_grad=True)
    y = straight_through_round(x)
    assert torch.allclose(y, torch.tensor([31 / 255, 128 / 255, 1.0, 0.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_match_channels():
    gray = torch.rand(2, 1, 4, 4)
    assert torch.equal(match_channels(gray, 3), gray.expand(-1, 3, -1, -1))
    rgb = torch.rand(2, 3, 4, 4)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(match_channels(rgb, 1)[:, 0], luma)
    rgba = torch.rand(2, 4, 4, 4)
    assert torch.equal(match_channels(rgba, 3), rgba[:, :3])


def test_same_size_input_is_only_normalised():
    p = Preprocess(resize=8, crop=8, mean=(0.5,), std=(0.25,), in_chans=1)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(p(x), (x - 0.5) / 0.25)


def test_resize_and_center_crop_like_timm_eval():
    p = Preprocess(resize=16, crop=(8, 8), in_chans=3, interpolation="bilinear")
    x = torch.rand(1, 3, 32, 48)
    y = p(x)
    assert y.shape == (1, 3, 8, 8)
    full = F.interpolate(x, size=(16, 24), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(y, full[..., 4:12, 8:16])


def test_preprocess_is_differentiable():
    p = Preprocess(resize=8, crop=8, in_chans=3, quantize=True)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    p(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_clamp_and_antialias_are_options():
    x = torch.tensor([1.2, -0.1, 0.5]).view(1, 1, 1, 3)
    assert torch.equal(Preprocess(in_chans=1, quantize=True)(x).flatten(), torch.tensor([1.0, 0.0, 128 / 255]))
    unclamped = Preprocess(in_chans=1, quantize=True, clamp=False)(x).flatten()  # as the authors' rounding
    torch.testing.assert_close(unclamped, torch.tensor([306 / 255, -26 / 255, 128 / 255]))
    image = torch.rand(1, 3, 40, 40)
    for antialias in (True, False):
        ours = Preprocess(resize=(10, 10), interpolation="bicubic", antialias=antialias)(image)
        torch.testing.assert_close(ours, F.interpolate(image, (10, 10), mode="bicubic", antialias=antialias))


def test_bad_overrides_name_the_key():
    import pytest
    from lit_featinv.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^model.extractor.preprocess.crop: \[224, 224\] is larger than the resize "
                                          r"to 200"):
        Preprocess(resize=200, crop=224)
    with pytest.raises(ConfigError, match=r"^model.extractor.preprocess.crop: .* larger than the resize to \[224, 100\]"):
        Preprocess(resize=(224, 100), crop=(224, 224))
    with pytest.raises(ConfigError, match=r"^model.extractor.preprocess: unknown key\(s\) \['size'\]; one of"):
        Preprocess.with_overrides({}, {"size": 3})
    with pytest.raises(ConfigError, match=r"^model.extractor.preprocess.interpolation: 'cubic' is not one of"):
        Preprocess.with_overrides({}, {"interpolation": "cubic"})
