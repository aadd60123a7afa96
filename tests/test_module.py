import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from lightning.pytorch import Trainer

from conftest import batch_of, build_module, mid_step, save_pixel_prior
from lit_featinv.errors import ConfigError
from lit_featinv import (CosineDistance, DiffusionPrior, FeatureInversion, LatentDiffusionPrior,
                         TargetData, TimmExtractor, UNetGradient)
from lit_featinv.method.measure import score
from lit_featinv.method.records import BestImage
from lit_featinv.method.sampling import sample_seed


def test_no_trainable_parameters(pixel_prior, timm_dir):
    module = build_module(pixel_prior, timm_dir)
    assert sum(p.numel() for p in module.parameters()) > 0
    assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("pipeline_cls,scheduler_cls", [(DDIMPipeline, DDIMScheduler), (DDPMPipeline, DDPMScheduler)])
def test_unguided_loop_reproduces_diffusers_pipeline(pixel_prior, timm_dir, pipeline_cls, scheduler_cls):
    module = build_module(pixel_prior, timm_dir, w=0.0, recurrence=1, num_inference_steps=10,
                          scheduler=f"diffusers.{scheduler_cls.__name__}")
    seed = sample_seed(0, "x", 0)
    with torch.no_grad():
        ours = module.generate(torch.zeros(1, module.extractor(torch.zeros(1, 1, 16, 16)).shape[1]), [seed])["image"]
    pipe = pipeline_cls(unet=UNet2DModel.from_pretrained(pixel_prior, subfolder="unet"),
                        scheduler=scheduler_cls.from_pretrained(pixel_prior, subfolder="scheduler"))
    kwargs = {"eta": 0.0} if pipeline_cls is DDIMPipeline else {}
    theirs = pipe(batch_size=1, generator=torch.Generator().manual_seed(seed), num_inference_steps=10,
                  output_type="np", **kwargs).images
    ours = ours.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4


def test_same_images_for_batch_sizes_1_and_3(pixel_prior, timm_dir, image_dir):
    module = build_module(pixel_prior, timm_dir, scheduler="diffusers.DDPMScheduler", recurrence=2,
                          samples_per_target=2)
    module.on_predict_start()
    batch3 = batch_of(image_dir)
    together = module.predict_step(batch3)
    alone = [rec for n in range(3) for rec in module.predict_step({k: v[n:n + 1] for k, v in batch3.items()})]
    assert [(r["id"], r["sample"], r["seed"]) for r in together] == [(r["id"], r["sample"], r["seed"]) for r in alone]
    for a, b in zip(together, alone):
        assert (a["image"].int() - b["image"].int()).abs().max() <= 1
    assert not torch.equal(together[0]["image"], together[1]["image"])  # two samples of a target differ


def test_guidance_lowers_the_loss(pixel_prior, timm_dir, image_dir):
    batch = batch_of(image_dir, limit=2)
    losses = {}
    for w in (0.0, 1.0):
        module = build_module(pixel_prior, timm_dir, w=w, num_inference_steps=8, recurrence=2)
        module.on_predict_start()
        records = module.predict_step(batch)
        losses[w] = np.mean([r["metrics"]["sq_l2"] for r in records])
    assert losses[1.0] < losses[0.0]


def test_best_image_ties_keep_the_earlier_image():
    best = BestImage()
    first, second, third = (torch.full((2, 1, 2, 2), v, dtype=torch.uint8) for v in (1, 2, 3))
    rows = torch.arange(2)
    best.update(first, torch.tensor([1.0, 2.0]), 0, rows)
    best.update(second, torch.tensor([1.0, 1.5]), 1, rows)  # sample 0 ties: keeps the earlier image
    best.update(third, torch.tensor([0.5, 1.5]), 2, rows)   # sample 1 ties: keeps step 1
    assert best.step.tolist() == [2, 1]
    assert best.image[0].eq(3).all() and best.image[1].eq(2).all()


@pytest.mark.parametrize("best_from_guided", [False, True])
def test_best_image_as_saved_is_never_worse_than_any_candidate(pixel_prior, timm_dir, best_from_guided, tracked):
    """Candidates per iteration: the estimate before guidance (and the one from the guided noise), then the final
    image; the saved best image's float32 loss is the smallest of all of them, as saved."""
    base = build_module(pixel_prior, timm_dir, w=2.0, preprocess={"quantize": True})
    module = FeatureInversion(base.prior, base.extractor, num_inference_steps=4, recurrence=2,
                              guidance=UNetGradient(scale=2.0), best_from_guided=best_from_guided, progress=False)
    module.on_predict_start()
    target = torch.randn(2, module.feature_dim, generator=torch.Generator().manual_seed(0))
    out = module.generate(target, [1, 2])
    offered = [c for call in tracked for c in call["candidates"]]
    per_iteration = 2 if best_from_guided else 1
    assert len(offered) == 4 * 2 * per_iteration + 1
    loss = lambda images: score(module.extractor, module.loss, images, target)[1]  # noqa: E731
    losses = torch.stack([loss(c.float() / 255) for c in offered])  # [candidates, B]
    best_loss, final_loss = loss(out["best_image"].float() / 255), loss(out["image"])
    assert (best_loss <= losses.min(0).values * (1 + 1e-6)).all()  # float noise of batched vs single forwards
    assert (best_loss <= final_loss * (1 + 1e-6)).all()
    first_best = losses.argmin(0)  # argmin returns the first minimum: the earlier image wins ties
    for n in range(2):
        assert torch.equal(out["best_image"][n], offered[first_best[n]][n])


def test_guided_candidate_is_the_clean_estimate_of_the_guided_noise(pixel_prior, timm_dir):
    module = build_module(pixel_prior, timm_dir, w=2.0)
    module.on_predict_start()
    scheduler, t, abar = mid_step(module)
    sample = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    output, image, guided_x0 = module.guided_output(scheduler, sample, t, abar, torch.randn(1, module.feature_dim), 2.0)
    torch.testing.assert_close(guided_x0, (sample - (1 - abar).sqrt() * output) / abar.sqrt())  # epsilon model
    with torch.no_grad():
        eps = module.prior.denoise(sample, t)
    torch.testing.assert_close(image, module.to_image((sample - (1 - abar).sqrt() * eps) / abar.sqrt()))
    assert (output - eps).abs().max() > 1e-3  # guidance moved the noise estimate


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_other_prediction_types_run(tmp_path, timm_dir, image_dir, kind):
    prior = save_pixel_prior(tmp_path / kind, prediction_type=kind)
    module = build_module(prior, timm_dir, loss=CosineDistance())
    module.on_predict_start()
    rec = module.predict_step(batch_of(image_dir, limit=1))[0]
    assert np.isfinite(rec["metrics"]["cosine"])


class AsVelocity(DiffusionPrior):
    """The same denoiser, reporting v = (eps - sqrt(1 - abar) x_t) / sqrt(abar) instead of its noise prediction."""

    def denoise(self, sample, t):
        abar = self.scheduler.alphas_cumprod[t].to(sample)
        return (super().denoise(sample, t) - (1 - abar).sqrt() * sample) / abar.sqrt()


@pytest.mark.parametrize("scheduler", ["diffusers.DDIMScheduler", "diffusers.DDPMScheduler"])
def test_guided_images_do_not_depend_on_the_prediction_type(pixel_prior, timm_dir, scheduler):
    """One denoiser seen as an epsilon model and as a v model: guidance (w > 0, K = 2) gives the same images."""
    images = []
    for prior in (DiffusionPrior(str(pixel_prior), scheduler=scheduler),
                  AsVelocity(str(pixel_prior), scheduler=scheduler, scheduler_config={"prediction_type": "v_prediction"})):
        module = FeatureInversion(prior, TimmExtractor(f"local-dir:{timm_dir}"), num_inference_steps=5,
                                  guidance=UNetGradient(scale=1.0), recurrence=2, progress=False)
        module.on_predict_start()
        target = torch.randn(2, module.feature_dim, generator=torch.Generator().manual_seed(0))
        images.append(module.generate(target, [1, 2])["image"])
    unguided = FeatureInversion(DiffusionPrior(str(pixel_prior), scheduler=scheduler), module.extractor,
                                num_inference_steps=5, guidance=UNetGradient(scale=0.0), recurrence=2, progress=False)
    assert (images[0] - unguided.generate(target, [1, 2])["image"]).abs().max() > 1e-2  # guidance did something
    torch.testing.assert_close(images[1], images[0], atol=1e-4, rtol=0)


def test_latent_prior_decodes_inside_the_loop(latent_prior, timm_dir, image_dir):
    module = FeatureInversion(LatentDiffusionPrior(str(latent_prior)), TimmExtractor(f"local-dir:{timm_dir}"),
                              num_inference_steps=3, recurrence=1, progress=False)
    assert module.prior.sample_shape == (4, 8, 8)
    module.on_predict_start()
    rec = module.predict_step(batch_of(image_dir, limit=1))[0]
    assert rec["image"].shape == (1, 16, 16) and rec["image"].dtype == torch.uint8


def test_inference_mode_guard(pixel_prior, timm_dir):
    """A Trainer's inference_mode=True is turned off by the module's setup (tests/test_api.py); a predict loop that
    runs under inference mode all the same stops in one line before any work."""
    module = build_module(pixel_prior, timm_dir)
    with torch.inference_mode(), pytest.raises(ConfigError, match="trainer.inference_mode: .*set it false"):
        module.on_predict_start()


def test_feature_file_of_the_wrong_size_names_the_file(pixel_prior, timm_dir, tmp_path):
    torch.save(torch.ones(2, 7), tmp_path / "wrong.pt")
    trainer = Trainer(accelerator="cpu", inference_mode=False, logger=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match=r"^data.features: .*wrong.pt\[0\]: target feature has 7 values"):
        trainer.predict(build_module(pixel_prior, timm_dir), datamodule=TargetData(features=str(tmp_path)),
                        return_predictions=False)


def test_missing_model_folder_names_the_key(tmp_path, timm_dir):
    from lit_featinv import DiffusionPrior
    with pytest.raises(ConfigError, match="model.prior.pretrained"):
        DiffusionPrior(str(tmp_path / "no_model"))


def test_a_weight_schedule_of_zeros_reproduces_the_unguided_run(pixel_prior, timm_dir, image_dir):
    """w per step: a schedule of zeros, or guidance outside start..stop, is the unguided run exactly."""
    base = build_module(pixel_prior, timm_dir, w=0.0)
    zeros = build_module(pixel_prior, timm_dir, guidance=UNetGradient(scale=[0.0] * 4))
    outside = build_module(pixel_prior, timm_dir, guidance=UNetGradient(scale=5.0, start=4))
    batch = batch_of(image_dir, limit=1)
    images = []
    for module in (base, zeros, outside):
        module.on_predict_start()
        images.append(module.predict_step(batch)[0]["image"])
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    with pytest.raises(ConfigError, match=r"^model.guidance.scale: has 3 values for 4 steps"):
        build_module(pixel_prior, timm_dir, guidance=UNetGradient(scale=[1.0] * 3))


def test_flat_pixel_repository_loads_with_null_subfolders(pixel_prior, offline_hub):
    """A hub repository with config.json and scheduler_config.json at its top level (as google/ddpm-cat-256), here
    in an offline Hugging Face cache: unet_subfolder / scheduler_subfolder null load it by its id."""
    snapshot = offline_hub / "models--someone--ddpm-flat" / "snapshots" / ("0" * 40)
    UNet2DModel.from_pretrained(pixel_prior, subfolder="unet").save_pretrained(snapshot)
    DDPMScheduler.from_pretrained(pixel_prior, subfolder="scheduler").save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    with pytest.raises(ConfigError, match=r"model.prior.pretrained: cannot load 'someone/ddpm-flat' \(scheduler/\)"):
        DiffusionPrior("someone/ddpm-flat")
    prior = DiffusionPrior("someone/ddpm-flat", unet_subfolder=None, scheduler_subfolder=None)
    reference = DiffusionPrior(str(pixel_prior))
    assert prior.scheduler.config == reference.scheduler.config
    z = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(z, torch.tensor(10)), reference.denoise(z, torch.tensor(10)))


def test_a_nan_first_candidate_does_not_stay_best():
    """``loss < NaN`` is never true: a NaN first candidate is replaced by the first later one with a number; a NaN
    later candidate never replaces a number."""
    best = BestImage()
    images = [torch.full((2, 1, 2, 2), v, dtype=torch.uint8) for v in (1, 2, 3)]
    rows = torch.arange(2)
    best.update(images[0], torch.tensor([float("nan"), 1.0]), 0, rows)
    best.update(images[1], torch.tensor([5.0, float("nan")]), 1, rows)
    best.update(images[2], torch.tensor([6.0, 2.0]), 2, rows)
    assert best.step.tolist() == [1, 0] and best.loss.tolist() == [5.0, 1.0]
    assert best.image[0].eq(2).all() and best.image[1].eq(1).all()
