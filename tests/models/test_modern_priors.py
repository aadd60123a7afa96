"""SDXL, SD 3.x and FLUX.1 priors on tiny random pipeline folders (tests/tiny_pipelines.py, the real scheduler
configs): parity with diffusers' own pipelines, the prompt-embeddings file, resolution, checkpointing, bf16 and the
one-line errors of bad folders, resolutions and files."""
import copy

import numpy as np
import pytest
import torch
from diffusers import AutoModel, FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline
from diffusers.utils.torch_utils import randn_tensor

from conftest import save_tiny_decoder
from lit_featinv.app.embed import main as encode_prompt_command
from lit_featinv.errors import ConfigError
from lit_featinv.models.conditioned import write_prompt_embeds
from lit_featinv.models.flux import FluxPrior
from lit_featinv.models.sd3 import StableDiffusion3Prior
from lit_featinv.models.sdxl import StableDiffusionXLPrior
from lit_featinv.models.text import save_prompt_embeds
from tiny_pipelines import FLUX_SCHEDULER, SD3_SCHEDULER, SDXL_SCHEDULER, save_flux, save_sd3, save_sdxl

PRIORS = {"sdxl": (StableDiffusionXLPrior, save_sdxl), "sd3": (StableDiffusion3Prior, save_sd3),
          "flux": (FluxPrior, save_flux)}
PIPELINES = {"sdxl": StableDiffusionXLPipeline, "sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """One tiny pipeline folder per family."""
    root = tmp_path_factory.mktemp("modern")
    return {name: save(root / name) for name, (_, save) in PRIORS.items()}


def prior_of(name: str, folders: dict, **kwargs):
    return PRIORS[name][0](str(folders[name]), **kwargs)


def run_prior(prior, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The unguided loop on the prior (a forked scheduler): image in [0, 1]."""
    scheduler = copy.deepcopy(prior.scheduler)
    scheduler.set_timesteps(steps, **prior.schedule_kwargs(steps))
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            x = scheduler.step(prior.denoise(model_input, t), t, x).prev_sample
        return ((prior.decode(x) + 1) / 2).clamp(0, 1)


def run_pipeline(name: str, folder, prompt: str, noise: torch.Tensor, steps: int, height: int, width: int,
                 scheduler=None) -> np.ndarray:
    """diffusers' own pipeline on the same noise and prompt, no classifier-free guidance."""
    extra = {"add_watermarker": False} if name == "sdxl" else {}
    pipe = PIPELINES[name].from_pretrained(folder, **extra, **({"scheduler": scheduler} if scheduler else {}))
    latents = FluxPipeline._pack_latents(noise, *noise.shape) if name == "flux" else noise  # FLUX takes them packed
    cfg = {"guidance_scale": 1.0} if name != "flux" else {}  # FLUX.1-dev: its distilled guidance (3.5), no CFG
    return pipe(prompt, num_inference_steps=steps, latents=latents, height=height, width=width, output_type="np",
                **cfg).images


@pytest.mark.parametrize("name, prompt, resolution, scheduler_config", [
    ("sdxl", "", None, None), ("sdxl", "lower newer", (16, 24), None),
    ("sd3", "lower newer", None, None), ("sd3", "", (24, 16), {"use_dynamic_shifting": True}),
    ("flux", "lower newer", None, None), ("flux", "", (24, 32), None),
])
def test_unguided_loop_reproduces_the_diffusers_pipeline(folders, name, prompt, resolution, scheduler_config):
    """Same noise, same prompt: the prior in a plain loop gives the pipeline's image (SDXL: the model's own Euler;
    SD3: its flow matching, also with a dynamically shifted schedule; FLUX: mu and sigmas as FluxPipeline)."""
    prior = prior_of(name, folders, prompt=prompt, resolution=resolution, scheduler_config=scheduler_config)
    height, width = prior.resolution
    assert prior.resolution == (resolution or (16, 16))
    noise = randn_tensor((1, *prior.sample_shape), generator=torch.Generator().manual_seed(0))
    ours = run_prior(prior, noise, 3).permute(0, 2, 3, 1).numpy()
    scheduler = copy.deepcopy(prior.scheduler) if scheduler_config else None
    theirs = run_pipeline(name, folders[name], prompt, noise, 3, height, width, scheduler)
    assert ours.shape == theirs.shape == (1, height, width, 3)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert theirs.std() > 0.01  # an image, not a constant that any loop would match


def test_the_real_scheduler_configs_are_loaded(folders):
    kinds = {name: prior_of(name, folders).scheduler for name in PRIORS}
    assert type(kinds["sdxl"]).__name__ == SDXL_SCHEDULER["_class_name"] == "EulerDiscreteScheduler"
    assert kinds["sdxl"].config.steps_offset == 1 and kinds["sdxl"].config.timestep_spacing == "leading"
    assert kinds["sd3"].config.shift == SD3_SCHEDULER["shift"] == 3.0 and not kinds["sd3"].config.use_dynamic_shifting
    assert kinds["flux"].config.use_dynamic_shifting and kinds["flux"].config.max_shift == FLUX_SCHEDULER["max_shift"]


@pytest.mark.parametrize("name", PRIORS)
def test_prompt_is_encoded_once_and_the_text_encoders_dropped(folders, name):
    prior = prior_of(name, folders)
    assert {child for child, _ in prior.named_children()} == {"unet", "vae"}
    assert not {"prompt_embeds", "pooled_prompt_embeds", "add_time_ids"} & set(prior.state_dict())
    with torch.no_grad():
        image = prior.decode(prior.denoise(torch.randn(2, *prior.sample_shape), prior.scheduler.timesteps[1]))
    assert image.shape == (2, 3, 16, 16)
    kwargs = prior.schedule_kwargs(4)
    assert set(kwargs) == {"sdxl": set(), "sd3": set(), "flux": {"mu", "sigmas"}}[name]


def test_flux_schedule_is_fluxpipelines(folders):
    """mu from the image's token count (calculate_shift over the scheduler config's values), sigmas 1 .. 1/N."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    prior = prior_of("flux", folders, resolution=(32, 48))
    kwargs = prior.schedule_kwargs(4)
    assert kwargs["mu"] == pytest.approx(calculate_shift((16 // 2) * (24 // 2), 256, 4096, 0.5, 1.15))
    np.testing.assert_allclose(kwargs["sigmas"], [1.0, 0.75, 0.5, 0.25])


def test_flux_guidance_embedding_only_where_the_transformer_has_one(folders, tmp_path):
    """FLUX.1-dev's guidance embedding takes ``guidance_scale``; a transformer without one (FLUX.1-schnell) ignores it."""
    schnell = save_flux(tmp_path / "schnell", guidance_embeds=False)
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    for folder, same in ((folders["flux"], False), (schnell, True)):
        outputs = []
        for scale in (1.0, 7.0):
            prior = FluxPrior(str(folder), guidance_scale=scale)
            with torch.no_grad():
                outputs.append(prior.denoise(z, prior.scheduler.timesteps[1]))
        assert torch.equal(*outputs) == same


@pytest.mark.parametrize("name", PRIORS)
def test_gradient_checkpointing_gives_the_same_gradient(folders, name, monkeypatch):
    checkpoint, calls = torch.utils.checkpoint.checkpoint, []

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    grads, checkpointed = [], []
    for checkpointing in (False, True):
        prior = prior_of(name, folders, gradient_checkpointing=checkpointing)
        assert prior.unet.is_gradient_checkpointing == prior.vae.is_gradient_checkpointing == checkpointing
        z = torch.randn(1, *prior.sample_shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
        calls.clear()
        prior.decode(prior.denoise(z, prior.scheduler.timesteps[1])).square().sum().backward()
        grads.append(z.grad)
        checkpointed.append(bool(calls))
    assert checkpointed == [False, True]  # the denoiser's and VAE's blocks went through torch's checkpoint
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", PRIORS)
def test_bf16_autocast_runs(folders, name):
    prior = prior_of(name, folders)
    dtypes = []
    linear = next(m for m in prior.unet.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    z = torch.randn(2, *prior.sample_shape, generator=torch.Generator().manual_seed(0))
    t = prior.scheduler.timesteps[1]
    with torch.no_grad():
        reference = prior.denoise(z, t)
        assert dtypes and set(dtypes) == {torch.float32}
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = prior.denoise(z, t)
            image = prior.decode(out)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the denoiser ran in bf16
    assert out.dtype == image.dtype == torch.float32 and torch.isfinite(image).all()
    assert (out - reference).abs().max() < 0.1 * reference.abs().max()


@pytest.mark.parametrize("name", PRIORS)
def test_prompt_embeds_file_round_trip_loads_no_text_encoder(folders, name, tmp_path, monkeypatch, capsys):
    prior_class = PRIORS[name][0]
    out = tmp_path / "prompt.pt"
    encode_prompt_command(["--prior", f"{prior_class.__module__}.{prior_class.__name__}", "--pretrained",
                           str(folders[name]), "--prompt", "lower newer", "--out", str(out)])
    assert str(out) in capsys.readouterr().out
    encoded = prior_of(name, folders, prompt="lower newer")
    import transformers

    def no_text_encoder(*args, **kwargs):
        raise AssertionError("a text encoder or tokenizer was loaded")
    loaders = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel", "CLIPTokenizer", "T5TokenizerFast")
    for loader in loaders:
        monkeypatch.setattr(getattr(transformers, loader), "from_pretrained", no_text_encoder)
    from_file = prior_of(name, folders, prompt_embeds=str(out))
    assert from_file.prompt == "lower newer"
    z = torch.randn(1, *encoded.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = encoded.scheduler.timesteps[1]
        assert torch.equal(encoded.denoise(z, t), from_file.denoise(z, t))
    with pytest.raises(AssertionError, match="a text encoder"):  # the patch holds: encoding would have failed
        prior_of(name, folders, prompt="lower newer")


def test_the_guidance_decoder_check_takes_these_priors(folders, tmp_path):
    """A TAESD-style tiny decoder of the same latents passes ``Guidance.check`` (an 8x8 latent through both)."""
    from lit_featinv import UNetGradient
    for name in PRIORS:
        prior = prior_of(name, folders)
        decoder = save_tiny_decoder(tmp_path / name, latent_channels=prior.sample_shape[0], upsamplings=1, channels=3)
        UNetGradient(decoder=str(decoder)).check(4, prior)
        with pytest.raises(ConfigError, match="model.guidance.decoder: does not fit the prior"):
            UNetGradient(decoder=str(save_tiny_decoder(tmp_path / f"{name}_x4", latent_channels=prior.sample_shape[0],
                                                       upsamplings=2, channels=3))).check(4, prior)


# ---- bad input: one line naming the key -------------------------------------------------------------------------
def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name, folder, found", [
    ("sd3", "flux", "holds a FluxTransformer2DModel in transformer/ (model_index.json: FluxPipeline); "
                    "StableDiffusion3Prior runs a SD3Transformer2DModel"),
    ("flux", "sd3", "holds a SD3Transformer2DModel in transformer/ (model_index.json: StableDiffusion3Pipeline); "
                    "FluxPrior runs a FluxTransformer2DModel"),
    ("sdxl", "sd3", "has no unet/ (model_index.json: StableDiffusion3Pipeline); StableDiffusionXLPrior runs a "
                    "UNet2DConditionModel with addition_embed_type 'text_time'"),
    ("sdxl", "sd1", "holds a UNet2DConditionModel with addition_embed_type None in unet/ (model_index.json: "
                    "StableDiffusionPipeline); StableDiffusionXLPrior runs a UNet2DConditionModel with "
                    "addition_embed_type 'text_time'"),
])
def test_a_folder_of_another_model_is_refused_before_any_weights_load(folders, sd_prior, monkeypatch, name, folder,
                                                                      found):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the folder was checked")
    monkeypatch.setattr(AutoModel, "from_pretrained", no_weights)
    path = str(sd_prior if folder == "sd1" else folders[folder])
    with pytest.raises(ConfigError) as err:
        PRIORS[name][0](path)
    assert one_line(err) == f"model.prior.pretrained: {path!r} {found}"


@pytest.mark.parametrize("name", PRIORS)
def test_an_unreachable_hub_id_fails_at_start_up_naming_the_key(offline_hub, name):
    with pytest.raises(ConfigError) as err:
        PRIORS[name][0]("nobody/no-such-model")
    assert one_line(err).startswith("model.prior.pretrained: cannot load 'nobody/no-such-model'")
    assert "point model.prior.pretrained at the local folder" in str(err.value)


@pytest.mark.parametrize("name, resolution, message", [
    ("sdxl", 17, "17x17 px: StableDiffusionXLPrior needs multiples of 2 px (VAE 2x, latent patches 1x1)"),
    ("sd3", (16, 18), "16x18 px: StableDiffusion3Prior needs multiples of 4 px (VAE 2x, latent patches 2x2)"),
    ("sd3", 48, "48x48 px: the denoiser takes at most 32 px a side"),
    ("flux", 22, "22x22 px: FluxPrior needs multiples of 4 px (VAE 2x, latent patches 2x2)"),
])
def test_a_resolution_the_patching_cannot_take_is_one_line(folders, name, resolution, message):
    with pytest.raises(ConfigError) as err:
        prior_of(name, folders, resolution=resolution)
    assert one_line(err) == f"model.prior.resolution: {message}"


def test_a_prompt_embeddings_file_of_the_wrong_shape_names_the_key(folders, tmp_path):
    sd3_file = tmp_path / "sd3.pt"
    write_prompt_embeds(StableDiffusion3Prior, str(folders["sd3"]), "", sd3_file)
    with pytest.raises(ConfigError) as err:
        prior_of("flux", folders, prompt_embeds=str(sd3_file))
    assert one_line(err) == (f"model.prior.prompt_embeds: {str(sd3_file)!r}: pooled_prompt_embeds is (1, 36), the "
                             f"denoiser takes (1, 16)")
    flat = tmp_path / "flat.pt"
    save_prompt_embeds(flat, {"prompt_embeds": torch.zeros(512, 48), "pooled_prompt_embeds": torch.zeros(1, 16)},
                       "lit_featinv.FluxPrior", "x", "")
    with pytest.raises(ConfigError, match=r"prompt_embeds is \(512, 48\), the denoiser takes \(1, N, 48\)"):
        prior_of("flux", folders, prompt_embeds=str(flat))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ConfigError) as err:
        prior_of("flux", folders, prompt_embeds=str(tmp_path / "tensor.pt"))
    assert one_line(err).startswith("model.prior.prompt_embeds: ") and "is not a prompt-embeddings file" in str(err)
    with pytest.raises(ConfigError) as err:
        prior_of("sd3", folders, prompt_embeds=str(sd3_file), prompt="lower")
    assert one_line(err).startswith("model.prior.prompt: 'lower', but the embeddings in ")


@pytest.mark.parametrize("name, missing", [("flux", "tokenizer_2"), ("sd3", "tokenizer_3"), ("sdxl", "tokenizer")])
def test_a_folder_without_a_tokenizer_is_one_line(folders, tmp_path, name, missing):
    """transformers builds an empty tokenizer where the files are missing: the prompt would be encoded as unknowns."""
    import shutil
    folder = shutil.copytree(folders[name], tmp_path / name, ignore=shutil.ignore_patterns(missing))
    with pytest.raises(ConfigError) as err:
        PRIORS[name][0](str(folder))
    assert one_line(err) == f"model.prior.pretrained: {str(folder)!r} has no {missing}/ (its tokenizer)"


def test_encode_prompt_command_errors_are_one_line(folders, tmp_path):
    out = str(tmp_path / "x.pt")
    with pytest.raises(SystemExit) as err:
        encode_prompt_command(["--prior", "lit_featinv.StableDiffusionPrior", "--pretrained", str(folders["sd3"]),
                               "--out", out])
    assert one_line(err).startswith("lit-featinv encode-prompt: error: --prior: 'lit_featinv.StableDiffusionPrior' is "
                                    "not a prior with text encoders")
    with pytest.raises(SystemExit) as err:
        encode_prompt_command(["--prior", "lit_featinv.models.sd3.StableDiffusion3Prior", "--pretrained",
                               str(folders["flux"]), "--out", out])
    assert one_line(err).startswith(f"lit-featinv encode-prompt: error: --pretrained: {str(folders['flux'])!r} holds "
                                    f"a FluxTransformer2DModel")


@pytest.mark.parametrize("name", PRIORS)
def test_weights_held_in_bf16_run_with_and_without_autocast(folders, name):
    """weights_dtype: bfloat16 holds the denoiser in bf16 (half the memory); its inputs follow, its prediction comes
    back in float32, close to the float32 model's, with a finite gradient to the sample; the VAE stays float32."""
    reference, prior = prior_of(name, folders), prior_of(name, folders, weights_dtype="bfloat16")
    assert prior.unet.dtype == torch.bfloat16 and prior.vae.dtype == torch.float32
    z = torch.randn(2, *prior.sample_shape, generator=torch.Generator().manual_seed(0))
    t = prior.scheduler.timesteps[1]
    with torch.no_grad():
        expected = reference.denoise(z, t)
    for autocast in (False, True):
        x = z.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = prior.denoise(x, t)
        out.sum().backward()
        assert out.dtype == torch.float32 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert (out - expected).abs().max() < 0.1 * expected.abs().max()
    with pytest.raises(ConfigError, match=r"^model.prior.weights_dtype: 'half' is not one of"):
        prior_of(name, folders, weights_dtype="half")


def test_flux_t5_token_count_is_an_argument_of_the_prior_and_of_encode_prompt(folders, tmp_path, capsys):
    """FLUX.1-schnell's model card runs 256 T5 tokens, FluxPipeline's default 512: max_sequence_length sets it in the
    prior and in lit-featinv encode-prompt (the same embeddings); a prior without T5 refuses it in one line."""
    default, short = prior_of("flux", folders), prior_of("flux", folders, max_sequence_length=16)
    assert default.prompt_embeds.shape[1] == 512 and short.prompt_embeds.shape[1] == 16
    out = tmp_path / "short.pt"
    encode_prompt_command(["--prior", "lit_featinv.FluxPrior", "--pretrained", str(folders["flux"]), "--out", str(out),
                           "--max-sequence-length", "16"])
    assert "prompt_embeds (1, 16, " in capsys.readouterr().out
    assert torch.equal(prior_of("flux", folders, prompt_embeds=str(out)).prompt_embeds, short.prompt_embeds)
    with pytest.raises(SystemExit) as err:
        encode_prompt_command(["--prior", "lit_featinv.StableDiffusionXLPrior", "--pretrained", str(folders["sdxl"]),
                               "--out", str(tmp_path / "x.pt"), "--max-sequence-length", "16"])
    assert one_line(err).startswith("lit-featinv encode-prompt: error: --max-sequence-length: lit_featinv."
                                    "StableDiffusionXLPrior takes no T5 token count")
