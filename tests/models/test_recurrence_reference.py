"""One guided step with self-recurrence (K iterations, re-noised back to t between them) on the tiny SDXL, SD 3.x and
FLUX.1 pipelines (tests/tiny_pipelines.py, the real scheduler configs), against a reference written by hand from the
scheduler's own sigmas: the clean estimate x0, the guided output, the Euler step to t_prev, the noise and the
re-noised sample of each iteration and the step's final sample, within 1e-5.

The package runs :meth:`FeatureInversion.generate`; its reverse loop is wrapped to record every guided call (the
sample it is given, its outputs), the clean estimate it decodes (``to_image``) and the noise ``renoise`` draws
(``sampling.randn_tensor``). The reference starts from the package's sample at the start of the step and from its
generators' states there, and uses none of ``lit_featinv.method``'s maths."""
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

import lit_featinv.module
from conftest import save_timm
from lit_featinv import FeatureInversion, TimmExtractor, UNetGradient
from lit_featinv.method import sampling
from lit_featinv.models.flux import FluxPrior
from lit_featinv.models.sd3 import StableDiffusion3Prior
from lit_featinv.models.sdxl import StableDiffusionXLPrior
from tiny_pipelines import save_flux, save_sd3, save_sdxl

PRIORS = {"sdxl": (StableDiffusionXLPrior, save_sdxl), "sd3": (StableDiffusion3Prior, save_sd3),
          "flux": (FluxPrior, save_flux)}
STEPS, STEP = 3, 1  # the checked step: the second of three (sigma < 1 for the flow models)
W, THETA = 0.5, 3.0  # w = 2 works too, but the flow models' guided velocity then reaches 60 and float32 rounding 1e-5
SEEDS = [11, 12]  # two generations: per-sample generators, per-sample rescaling
TOL = 1e-5


class Done(Exception):
    """Raised by the recording loop when the step after the checked one starts."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """One tiny pipeline folder per family, and a tiny timm ResNet on 16x16 RGB (the pipelines' image size)."""
    root = tmp_path_factory.mktemp("recurrence")
    out = {name: save(root / name) for name, (_, save) in PRIORS.items()}
    out["timm"] = save_timm(root / "timm", in_chans=3)
    return out


# ---- the reference, by hand ------------------------------------------------------------------------------------------
def reference_scheduler(name: str, folder):
    """The folder's own scheduler config, set to STEPS steps as diffusers' pipelines set it (FLUX: mu of the image's
    token count, sigmas 1 .. 1/N)."""
    if name == "sdxl":
        scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        scheduler.set_timesteps(STEPS)
        return scheduler
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    if name == "flux":
        c = scheduler.config  # 8x8 latents, 2x2 packed: 16 tokens
        mu = calculate_shift(16, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        scheduler.set_timesteps(STEPS, sigmas=np.linspace(1.0, 1 / STEPS, STEPS).tolist(), mu=mu)
    else:
        scheduler.set_timesteps(STEPS)
    return scheduler


def renoise_by_hand(name: str, x_prev, sigma, sigma_prev, noise):
    """Forward diffusion from level sigma_prev back to sigma (< 1).

    Sigma space (Euler, x = x0 + sigma eps): add independent noise of variance sigma^2 - sigma_prev^2.
    Flow (x = (1 - sigma) x0 + sigma eps): scale the signal by r = (1 - sigma) / (1 - sigma_prev); the noise already
    in the sample is then r sigma_prev, so add independent noise of variance sigma^2 - (r sigma_prev)^2."""
    if name == "sdxl":
        return x_prev + (sigma ** 2 - sigma_prev ** 2).sqrt() * noise
    r = (1 - sigma) / (1 - sigma_prev)
    return r * x_prev + (sigma ** 2 - (r * sigma_prev) ** 2).sqrt() * noise


def decode_by_hand(prior, x0):
    """Latent -> image in [0, 1]: the VAE config's scaling and shift undone, as diffusers' pipelines decode."""
    cfg = prior.vae.config
    return (prior.vae.decode(x0 / cfg.scaling_factor + (cfg.get("shift_factor") or 0.0)).sample + 1) / 2


def guided_by_hand(name: str, module, x, t, sigma, target) -> dict:
    """The paper's guided output at (x, t): g = d ||f(image(x0)) - f*||^2 / d x, rescaled per sample to the norm of
    the noise estimate eps and clipped to mean +- THETA std; eps~ = eps + W g, handed back as the model's output.

    SDXL (epsilon, sigma space): the model sees x / sqrt(sigma^2 + 1), x0 = x - sigma eps.
    SD3 / FLUX (velocity v = eps - x0 of x = (1 - sigma) x0 + sigma eps): x0 = x - sigma v, eps = x0 + v; the guided
    v~ = (eps~ - x) / (1 - sigma). The guided x0~ is the clean estimate of the guided output."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = module.prior.denoise(x / (sigma ** 2 + 1).sqrt() if name == "sdxl" else x, t)
        x0 = x - sigma * out
        loss = (module.extractor(decode_by_hand(module.prior, x0)) - target).pow(2).sum()
        grad = torch.autograd.grad(loss, x)[0]
    x, out, x0 = x.detach(), out.detach(), x0.detach()
    eps = out if name == "sdxl" else x0 + out
    dims, norm = (1, 2, 3), lambda v: v.pow(2).sum((1, 2, 3), keepdim=True).sqrt()  # noqa: E731
    g = grad * norm(eps) / norm(grad)
    mean, std = g.mean(dims, keepdim=True), g.std(dims, keepdim=True)
    g = torch.minimum(torch.maximum(g, mean - THETA * std), mean + THETA * std)
    eps_guided = eps + W * g
    output = eps_guided if name == "sdxl" else (eps_guided - x) / (1 - sigma)  # v = eps - x0 = (eps - x) / (1 - sigma)
    return {"out": out, "x0": x0, "output": output, "guided_x0": x - sigma * output}


def reference_step(name: str, folder, module, inputs: list, states, target) -> dict:
    """The checked step by hand, one iteration per sample the package gave its guided call there (``inputs``: the
    step's start, then each re-noised sample), each sample's noise from a generator in the recorded state. Each
    iteration starts from the package's own input, so that rounding does not compound: at w = 2, a 1e-6 change of
    the input moves the package's own guided output by 2e-5 (SDXL) to 1e-4 (SD3) (the gradient through the
    extractor's ReLUs and the clipping)."""
    scheduler = reference_scheduler(name, folder)
    t, sigma, sigma_prev = scheduler.timesteps[STEP], scheduler.sigmas[STEP].float(), scheduler.sigmas[STEP + 1].float()
    gens = [torch.Generator().set_state(state) for state in states]
    ref = {"t": t, "sigma": sigma, "iterations": [], "noise": [], "renoised": []}
    for k, x in enumerate(inputs):
        it = guided_by_hand(name, module, x, t, sigma, target)
        ref["iterations"].append(it)
        x_prev = x + (sigma_prev - sigma) * it["output"]  # Euler: the output is dx/dsigma in both spaces
        if k == len(inputs) - 1:
            ref["final"] = x_prev
            break
        noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in gens])
        ref["noise"].append(noise)
        ref["renoised"].append(renoise_by_hand(name, x_prev, sigma, sigma_prev, noise))
    return ref


# ---- the package, recorded -------------------------------------------------------------------------------------------
def build(name: str, folders: dict, iterations: int) -> FeatureInversion:
    prior = PRIORS[name][0](str(folders[name]))
    extractor = TimmExtractor(f"local-dir:{folders['timm']}")
    return FeatureInversion(prior, extractor, guidance=UNetGradient(scale=W, rescale=True, clip_theta=THETA),
                            num_inference_steps=STEPS, recurrence=iterations, progress=False, prior_score=None)


def record(module: FeatureInversion, target, monkeypatch) -> dict:
    """Run ``generate`` until step STEP + 1 starts; what the package computed at step STEP."""
    rec = {"calls": [], "x0": [], "noise": [], "where": None}
    loop, to_image, draw = lit_featinv.module.reverse_loop, module.to_image, sampling.randn_tensor

    def recording_loop(guided, scheduler, sample, gens, *args, **kwargs):
        def traced(x, t, abar, rows, w):
            i = int((scheduler.timesteps == t).nonzero()[0])
            k = sum(1 for c in rec["calls"] if c["step"] == i)
            if i == STEP + 1:
                rec["final"] = x.clone()
                raise Done
            if i == STEP and k == 0:
                rec["states"] = [g.get_state().clone() for g in gens]
            rec["where"] = (i, k)
            result = guided(x, t, abar, rows, w)  # (guided output, image, guided x0)
            rec["calls"].append({"step": i, "k": k, "x": x.clone(), "t": t, "w": w, "output": result[0].clone(),
                                 "guided_x0": result[2].clone()})
            return result
        return loop(traced, scheduler, sample, gens, *args, **kwargs)

    def recording_image(x0):
        if rec["where"] is not None and rec["where"][0] == STEP and len(rec["x0"]) == rec["where"][1]:
            rec["x0"].append(x0.detach().clone())  # the first decode of a guided call: the estimate before guidance
        return to_image(x0)

    def recording_draw(*args, **kwargs):
        noise = draw(*args, **kwargs)
        if rec["where"] is not None and rec["where"][0] == STEP:
            rec["noise"].append(noise.clone())
        return noise

    monkeypatch.setattr(lit_featinv.module, "reverse_loop", recording_loop)
    monkeypatch.setattr(module, "to_image", recording_image)
    monkeypatch.setattr(sampling, "randn_tensor", recording_draw)
    with pytest.raises(Done):
        module.generate(target, SEEDS)
    rec["step"] = [c for c in rec["calls"] if c["step"] == STEP]
    return rec


def differences(rec: dict, ref: dict) -> dict:
    """Largest absolute difference of each compared quantity (package vs reference)."""
    diff = lambda a, b: float((a - b).abs().max())  # noqa: E731
    out = {}
    for k, (got, want) in enumerate(zip(rec["step"], ref["iterations"])):
        out[f"x0[{k}]"] = diff(rec["x0"][k], want["x0"])
        out[f"output[{k}]"] = diff(got["output"], want["output"])
        out[f"guided_x0[{k}]"] = diff(got["guided_x0"], want["guided_x0"])
    for k, want in enumerate(ref["noise"]):
        out[f"noise[{k}]"] = diff(rec["noise"][k], want)
        out[f"renoised[{k}]"] = diff(rec["step"][k + 1]["x"], ref["renoised"][k])
    out["final"] = diff(rec["final"], ref["final"])
    return out


def target_of(module) -> torch.Tensor:
    with torch.no_grad():
        return module.extractor(torch.rand(len(SEEDS), 3, 16, 16, generator=torch.Generator().manual_seed(5)))


# ---- tests -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRIORS)
def test_renoise_by_hand_is_diffusers_forward_noising_from_a_clean_sample(folders, name):
    """The reference's re-noise from level 0 (a clean sample) is the scheduler's own forward noising at t: Euler's
    ``add_noise`` (x0 + sigma n), flow matching's ``scale_noise`` ((1 - sigma) x0 + sigma n)."""
    scheduler = reference_scheduler(name, folders[name])
    t, sigma = scheduler.timesteps[STEP], scheduler.sigmas[STEP]
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    ours = renoise_by_hand(name, x0, sigma, torch.tensor(0.0), noise)
    theirs = (scheduler.add_noise(x0, noise, t[None]) if name == "sdxl"
              else scheduler.scale_noise(x0, t[None], noise))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("iterations", [2, 3])
@pytest.mark.parametrize("name", PRIORS)
def test_guided_step_with_recurrence_matches_the_reference(folders, name, iterations, monkeypatch):
    """At the second of three steps (sigma in (0, 1)), with w = 0.5 through a tiny timm ResNet: every iteration's x0,
    guided output and guided x0, every re-noise's noise and re-noised sample, and the step's final sample equal the
    hand-written reference within 1e-5."""
    module = build(name, folders, iterations)
    target = target_of(module)
    rec = record(module, target, monkeypatch)
    start = rec["step"][0]["x"]
    ref = reference_step(name, folders[name], module, [c["x"] for c in rec["step"]], rec["states"], target)

    assert [c["k"] for c in rec["step"]] == list(range(iterations))
    assert all(c["w"] == W and torch.equal(torch.as_tensor(c["t"]), ref["t"]) for c in rec["step"])
    assert 0 < float(ref["sigma"]) and (name == "sdxl" or float(ref["sigma"]) < 1)  # abar > 0: a guided step
    assert len(rec["x0"]) == iterations and len(rec["noise"]) == iterations - 1
    first = ref["iterations"][0]
    assert float((first["output"] - first["out"]).abs().max()) > 0.05  # guidance changes the output
    assert float((ref["renoised"][0] - start).abs().max()) > 0.05  # the recurrence moves the sample

    diffs = differences(rec, ref)
    assert max(diffs.values()) <= TOL, {k: f"{v:.2e}" for k, v in diffs.items()}
