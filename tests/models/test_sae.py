"""SAE latents as the feature (lit_featinv.models.sae): each library's state-dict layout encodes as that library's own
code does (re-implemented here from their public sources), TopK and JumpReLU, gradients to the image, the decoder
direction as a Direction target, a guided maximisation on the tiny prior, and bad input in one line.

``save_tiny_sae`` builds a random SAELens-layout SAE file (for tests/app/test_presets.py's stand-ins too)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lit_featinv import Activation, CleanEstimateGradient, Direction, DiffusionPrior, FeatureInversion, TimmExtractor
from lit_featinv.config import instantiate
from lit_featinv.errors import ConfigError
from lit_featinv.method.targets import target_features
from lit_featinv.models.extractors import FeatureExtractor
from lit_featinv.models.sae import SAEExtractor, read_sae
from lit_featinv.runs.data import TargetData

D_IN, D_SAE, K = 96, 64, 8  # the tiny timm ResNet's pooled feature is 96-d


def random_sae(d_in: int = D_IN, d_sae: int = D_SAE, seed: int = 0) -> dict:
    """SAELens-named parameters; pre-activations of unit-scale features spread around 0, some below every threshold."""
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5, "b_enc": torch.randn(d_sae, generator=g) - 0.5,
            "W_dec": torch.randn(d_sae, d_in, generator=g) / d_in ** 0.5, "b_dec": torch.randn(d_in, generator=g) * 0.3,
            "threshold": torch.rand(d_sae, generator=g) * 0.8}


def save_tiny_sae(path: Path, d_in: int = D_IN, d_sae: int = 2048, seed: int = 0) -> Path:
    """A random SAE in SAELens' layout (``sae_weights.safetensors``: W_enc, b_enc, W_dec, b_dec, threshold), e.g. a
    stand-in for ``assets/zoo/sae-resnet10t`` on tests/conftest.py's tiny timm ResNet (96-d feature)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in random_sae(d_in, d_sae, seed).items()}, str(path))
    return path


# ---- each library's encode, as its public code does it ---------------------------------------------------------------
def saelens_encode(p: dict, x: torch.Tensor, activation: str, k: int | None) -> torch.Tensor:
    """jbloomAus/SAELens @ 91ca16c: ``process_sae_in`` (x - b_dec * apply_b_dec_to_input), ``sae_in @ W_enc + b_enc``;
    StandardSAE ReLU; TopK (topk_sae.py): topk, ``.relu()``, scatter; JumpReLUSAE: ReLU(h) * (h > threshold)."""
    hidden_pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    if activation == "topk":
        values, indices = torch.topk(hidden_pre, k=k, dim=-1, sorted=False)
        return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())
    acts = torch.relu(hidden_pre)
    return acts * (hidden_pre > p["threshold"]).to(acts.dtype) if activation == "jumprelu" else acts


def saev_encode(p: dict, x: torch.Tensor, activation: str, k: int | None) -> torch.Tensor:
    """OSU-NLP-Group/saev @ 3d73f1f (src/saev/nn/modeling.py): ``h_x = x @ W_enc + b_enc``; ReluActivation;
    TopKActivation: mask of the top k, times h_x (no ReLU); BatchTopKActivation in eval: ``where(h > threshold)``."""
    h_x = x @ p["W_enc"] + p["b_enc"]
    if activation == "topk":
        _, idxs = torch.topk(h_x, k, dim=-1, sorted=False)
        return torch.mul(torch.zeros_like(h_x).scatter(-1, idxs, 1.0), h_x)
    if activation == "jumprelu":
        threshold = p["activation.threshold"]
        return torch.where(h_x > (threshold if threshold > 0 else 0), h_x, torch.zeros_like(h_x))
    return torch.nn.functional.relu(h_x)


class OvercompleteLike(nn.Module):
    """KempnerInstitute/overcomplete @ a1781af, the modules of an SAE with the default ``linear`` encoder
    (``MLPEncoder(nb_blocks=0, norm_layer=nn.Identity)``), its ``DictionaryLayer`` and JumpSAE's log-thresholds."""

    def __init__(self, d_in: int, d_sae: int):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.final_block = nn.Sequential(nn.Linear(d_in, d_sae), nn.Identity())
        self.dictionary = nn.Module()
        self.dictionary._weights = nn.Parameter(torch.randn(d_sae, d_in))
        self.dictionary.register_buffer("multiplier", torch.tensor(0.0))
        self.thresholds = nn.Parameter(torch.rand(d_sae) * 2 - 2.5)  # exp: 0.08 .. 0.6

    def encode(self, x: torch.Tensor, activation: str, k: int | None) -> torch.Tensor:
        """MLPEncoder.forward: pre = final_block(x), codes = ReLU; TopKSAE.encode: topk of the codes, scatter;
        JumpSAE.encode: ReLU, then zero where codes < exp(thresholds)."""
        codes = torch.relu(self.encoder.final_block(x))
        if activation == "topk":
            z_topk = torch.topk(codes, k, dim=-1)
            return torch.zeros_like(codes).scatter(-1, z_topk.indices, z_topk.values)
        if activation == "jumprelu":
            out = codes.clone()
            out[codes < torch.exp(self.thresholds)] = 0
            return out
        return codes


def write_layout(layout: str, folder: Path):
    """(a weights file of ``layout``, its reference encode(x, activation, k)), as that library saves it."""
    torch.manual_seed(1)
    if layout == "overcomplete":
        model = OvercompleteLike(D_IN, D_SAE)
        torch.save(model.state_dict(), folder / "overcomplete.pt")
        return folder / "overcomplete.pt", lambda x, act, k: model.encode(x, act, k)
    p = random_sae()
    if layout == "saelens":
        save_file(p, str(folder / "sae_weights.safetensors"))
        return folder / "sae_weights.safetensors", lambda x, act, k: saelens_encode(p, x, act, k)
    state = {name: p[name] for name in ("W_dec", "b_dec", "W_enc")} | {"b_enc": p["b_enc"] - 3.0,  # top k partly < 0
                                                                       "activation.threshold": torch.tensor(0.3)}
    with open(folder / "sae.pt", "wb") as fd:  # saev's nn.dump: a JSON header line, then torch.save into the same file
        fd.write(json.dumps({"schema": 5, "cfg": {"d_model": D_IN, "d_sae": D_SAE}}).encode() + b"\n")
        torch.save(state, fd)
    return folder / "sae.pt", lambda x, act, k: saev_encode(state, x, act, k)


@pytest.fixture(scope="module")
def base(timm_dir) -> TimmExtractor:
    return TimmExtractor(f"local-dir:{timm_dir}")


@pytest.mark.parametrize("activation", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("layout", ["saelens", "saev", "overcomplete"])
def test_each_layout_encodes_as_its_library(tmp_path, base, layout, activation):
    weights, reference = write_layout(layout, tmp_path)
    k = K if activation == "topk" else None
    sae = SAEExtractor(base, str(weights), layout=layout, activation=activation, k=k)
    x = torch.randn(16, D_IN) * 2
    with torch.no_grad():
        ours, theirs = sae.encode(x), reference(x, activation, k)
    assert (ours - theirs).abs().max() <= 1e-6
    assert (theirs != 0).any() and (theirs == 0).any()
    if layout == "saev" and activation == "topk":  # its TopK keeps negative pre-activations: the test tells them apart
        assert (theirs < 0).any()
    images = torch.rand(3, 1, 16, 16)
    with torch.no_grad():  # through images: the base extractor's feature, then the SAE
        assert (sae(images) - reference(base(images), activation, k)).abs().max() <= 1e-6


def test_topk_keeps_exactly_k_and_selects_latents(tmp_path, base):
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    sae = SAEExtractor(base, str(weights), activation="topk", k=K)
    f = torch.randn(32, D_IN) * 2
    code = sae.encode(f)
    assert ((code != 0).sum(1) == K).all()  # these features' top 8 are all > 0
    pre = SAEExtractor(base, str(weights), activation="topk", k=K, pre_activation=True).encode(f)
    assert torch.equal(code.gather(1, pre.topk(K).indices), pre.topk(K).values)
    some = SAEExtractor(base, str(weights), activation="topk", k=K, latents=[5, 0, 63])
    images = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(some(images), sae(images)[:, [5, 0, 63]])


def test_jumprelu_zeroes_what_is_not_above_its_threshold(tmp_path, base):
    eye = torch.eye(4)
    save_file({"W_enc": eye, "b_enc": torch.zeros(4), "W_dec": eye.clone(), "b_dec": torch.zeros(4),
               "threshold": torch.tensor([0.5, 0.5, 1.0, -1.0])}, str(tmp_path / "jump.safetensors"))
    sae = SAEExtractor(base, str(tmp_path / "jump.safetensors"), activation="jumprelu")
    f = torch.tensor([[0.4, 0.6, 0.9, -0.5], [0.5, 2.0, 1.2, 0.25]])
    expected = torch.tensor([[0.0, 0.6, 0.0, 0.0], [0.0, 2.0, 1.2, 0.25]])  # a threshold below 0 counts as 0
    assert torch.equal(sae.encode(f), expected)


def test_gradients_flow_to_the_image_as_through_the_reference(tmp_path, base):
    weights, reference = write_layout("saelens", tmp_path)
    sae = SAEExtractor(base, str(weights), activation="topk", k=K)
    images = torch.rand(2, 1, 16, 16, requires_grad=True)
    with torch.no_grad():
        latent = int(sae(images.detach())[0].argmax())  # on for the first image
    sae(images)[:, latent].sum().backward()
    ours, images.grad = images.grad, None
    reference(base(images), "topk", K)[:, latent].sum().backward()
    assert ours.abs().sum() > 0 and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, images.grad, rtol=1e-5, atol=1e-8)


def test_decoder_direction_is_a_direction_target_in_the_base_space(tmp_path, base):
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    sae = SAEExtractor(base, str(weights))
    assert torch.equal(sae.decoder_direction(7), read_sae(str(weights))["W_dec"][7])
    torch.save(read_sae(str(weights))["W_dec"], tmp_path / "decoder.pt")  # docs/extractors.md's line (SAE latents)
    data = TargetData(constructed=[Direction(str(tmp_path / "decoder.pt"), row=7, norm=3.0)])
    data.setup()
    batch = next(iter(data.predict_dataloader()))
    target = target_features(base, batch, torch.device("cpu"), D_IN)[0]
    torch.testing.assert_close(target, sae.decoder_direction(7) * 3.0 / sae.decoder_direction(7).norm())


def test_a_config_builds_it_around_a_nested_base(tmp_path, timm_dir):
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    spec = {"class_path": "lit_featinv.models.sae.SAEExtractor", "init_args": {
        "base": {"class_path": "lit_featinv.TimmExtractor", "init_args": {"model_name": f"local-dir:{timm_dir}"}},
        "weights": str(weights), "activation": "topk", "k": K, "latents": [1, 2]}}
    sae = instantiate(spec, FeatureExtractor)
    assert isinstance(sae.base, TimmExtractor) and sae.measure(torch.rand(1, 1, 16, 16)).shape == (1, 2)


def guided_latents(pixel_prior, timm_dir, weights, latents, scale, pre_activation=False) -> list[float]:
    """A run maximising ``latents`` (one one-hot target each, ``Activation(channel=None)``, 2 generations per target,
    4 DDIM steps, K = 2); per generation, its own latent's pre-activation on the image as returned."""
    sae = SAEExtractor(TimmExtractor(f"local-dir:{timm_dir}"), str(weights), latents=latents,
                       pre_activation=pre_activation)
    module = FeatureInversion(DiffusionPrior(str(pixel_prior), scheduler="diffusers.DDIMScheduler"), sae,
                              loss=Activation(channel=None), guidance=CleanEstimateGradient(scale=scale),
                              num_inference_steps=4, recurrence=2, samples_per_target=2, progress=False)
    images = torch.stack(list(module(features=torch.eye(len(latents)), output_type="pt").images))
    pre = SAEExtractor(TimmExtractor(f"local-dir:{timm_dir}"), str(weights), latents=latents, pre_activation=True)
    values = pre.measure(images)
    return [float(values[i, i // 2]) for i in range(len(images))]  # generation i: target i // 2


def test_maximising_a_latent_raises_it_above_the_unguided_run(pixel_prior, timm_dir, tmp_path):
    """Two live latents (the largest mean codes on random images, as the zoo preset picks them): with the same seeds,
    every guided generation's latent is higher than without guidance."""
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    code = SAEExtractor(TimmExtractor(f"local-dir:{timm_dir}"), str(weights))
    mean = code.measure(torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))).mean(0)
    live = mean.argsort(descending=True)[:2].tolist()
    assert (mean[live] > 0).all()
    guided, unguided = (guided_latents(pixel_prior, timm_dir, weights, live, scale) for scale in (1.0, 0.0))
    assert all(g > u > 0 for g, u in zip(guided, unguided)), (guided, unguided)


def test_a_latent_that_is_off_is_raised_through_its_pre_activation(pixel_prior, timm_dir, tmp_path):
    """A latent that no random image turns on has no gradient through its ReLU: the code-maximising run is the
    unguided one; with ``pre_activation`` every generation's pre-activation rises."""
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    pre = SAEExtractor(TimmExtractor(f"local-dir:{timm_dir}"), str(weights), pre_activation=True)
    off = [int(pre.measure(torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))).mean(0).argmin())]
    unguided = guided_latents(pixel_prior, timm_dir, weights, off, 0.0)
    assert max(unguided) < 0
    assert guided_latents(pixel_prior, timm_dir, weights, off, 1.0) == unguided
    raised = guided_latents(pixel_prior, timm_dir, weights, off, 1.0, pre_activation=True)
    assert all(r > u for r, u in zip(raised, unguided)), (raised, unguided)


# ---- bad input: one line naming the key -----------------------------------------------------------------------------
def one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_an_sae_of_another_width_names_the_key_and_both_sizes(tmp_path, base):
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_in=512, d_sae=D_SAE)
    sae = SAEExtractor(base, str(weights))
    with pytest.raises(ConfigError) as err:
        sae.measure(torch.rand(1, 1, 16, 16))
    assert one_line(err) == ("model.extractor.weights: the SAE takes 512-d features (W_enc [512, 64]), but "
                             "model.extractor.base gives 96-d ones")


@pytest.mark.parametrize("kwargs, message", [
    ({"latents": [3, 64]}, "model.extractor.latents: [64] out of range of the SAE's 64 latents (0..63)"),
    ({"layout": "sparsify"}, "model.extractor.layout: 'sparsify' is not one of ['overcomplete', 'saelens', 'saev']"),
    ({"activation": "gelu"}, "model.extractor.activation: 'gelu' is not one of ['relu', 'topk', 'jumprelu']"),
    ({"activation": "topk"}, "model.extractor.k: None does not fit activation 'topk': topk takes a k in 1..64"),
    ({"activation": "topk", "k": 65}, "model.extractor.k: 65 does not fit activation 'topk'"),
    ({"k": 4}, "model.extractor.k: 4 does not fit activation 'relu'"),
    ({"layout": "overcomplete"}, "model.extractor.weights: "),
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, base, kwargs, message):
    weights = save_tiny_sae(tmp_path / "sae.safetensors", d_sae=D_SAE)
    with pytest.raises(ConfigError) as err:
        SAEExtractor(base, str(weights), **kwargs)
    assert one_line(err).startswith(message)


def test_missing_parts_of_the_file_name_the_key(tmp_path, base):
    p = random_sae()
    save_file({k: v for k, v in p.items() if k != "threshold"}, str(tmp_path / "no_threshold.safetensors"))
    with pytest.raises(ConfigError) as err:
        SAEExtractor(base, str(tmp_path / "no_threshold.safetensors"), activation="jumprelu")
    assert one_line(err).startswith("model.extractor.activation: jumprelu needs thresholds")
    save_file({"W_enc": p["W_enc"], "b_enc": p["b_enc"][:10], "W_dec": p["W_dec"], "b_dec": p["b_dec"]},
              str(tmp_path / "short.safetensors"))
    with pytest.raises(ConfigError) as err:
        SAEExtractor(base, str(tmp_path / "short.safetensors"))
    assert "b_enc [10] do not fit W_enc [96, 64]" in one_line(err)
    model = OvercompleteLike(D_IN, D_SAE)
    model.encoder.final_block[1] = nn.BatchNorm1d(D_SAE)  # the mlp_bn encoders: not one linear layer
    torch.save(model.state_dict(), tmp_path / "bn.pt")
    with pytest.raises(ConfigError) as err:
        SAEExtractor(base, str(tmp_path / "bn.pt"), layout="overcomplete")
    assert "encoder beyond one linear layer" in one_line(err)
    with pytest.raises(ConfigError, match="model.extractor.weights: no such file"):
        SAEExtractor(base, str(tmp_path / "missing.safetensors"))
