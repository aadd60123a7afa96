"""A new user's first frictions (issue 37): a mistyped preset, the modern presets' image-folder placeholder, hub weights
that are not on disk. Each ends in one line that says what to type; none loads a model or waits for a network."""
import time
from types import SimpleNamespace

import huggingface_hub
import pytest

from conftest import FMNIST, ROOT
from lit_featinv import TimmExtractor
from lit_featinv.app.cli import main
from lit_featinv.errors import ConfigError
from lit_featinv.method.guidance import load_tiny_decoder
from lit_featinv.models.loading import load_pretrained

MODERN = sorted(p.relative_to(ROOT / "configs").with_suffix("").as_posix()
                for p in (ROOT / "configs" / "modern").glob("*.yaml"))


def fail(*args, **kwargs):
    raise AssertionError(f"called with {args} {kwargs}")


@pytest.fixture
def no_retry(monkeypatch):
    """huggingface_hub's retries sleep between tries: none may happen."""
    monkeypatch.setattr(time, "sleep", fail)


@pytest.mark.parametrize("typed, suggested", [("fmnist/pixel_resnt", "'fmnist/pixel_resnet'"),
                                              ("pixel_resnt", "'fmnist/pixel_resnet'"),
                                              ("quickstrat", "'quickstart'")])
def test_an_unknown_preset_suggests_the_nearest(typed, suggested, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", typed])
    message = str(stop.value)
    assert message.startswith(f"lit-featinv: error: --config: '{typed}' is neither a file nor a preset (cwd: "
                              f"{tmp_path}); did you mean {suggested}")
    assert "presets: fmnist/channel, " in message and "\n" not in message


@pytest.mark.parametrize("preset", MODERN)
def test_the_image_folder_placeholder_names_the_key_as_typed(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no targets/ here, as in a new user's folder
    monkeypatch.setattr(huggingface_hub, "model_info", fail)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", preset])
    assert str(stop.value) == (f"lit-featinv: error: data.init_args.images: no such file or folder 'targets' (cwd: "
                               f"{tmp_path}); give your images: --data.init_args.images path/to/your/images")
    assert not (tmp_path / "runs").exists()  # before the run folder


def test_hub_weights_missing_offline_name_the_id_its_user_and_the_fetch_command(offline_hub, no_retry, tmp_path,
                                                                               monkeypatch):
    """HF_HUB_OFFLINE and an empty cache: the preset's prior fails at start-up, before any download is tried."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "model_info", fail)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", "modern/sdxl_turbo_clip", "--data.init_args.images", str(FMNIST)])
    assert str(stop.value) == (
        "lit-featinv: error: model.prior.pretrained: cannot load 'stabilityai/sdxl-turbo' (scheduler/) for the prior: "
        "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set. Fetch it with `hf download "
        "stabilityai/sdxl-turbo` where a network is available (a gated model needs its licence accepted on "
        "https://huggingface.co/stabilityai/sdxl-turbo and `hf auth login` first), or point model.prior.pretrained at "
        "the local folder")
    with pytest.raises(ConfigError, match=r"^model.sampler.decoder: cannot load 'nobody/tiny-vae' for the decoder: it "
                                          r"is not in the Hugging Face cache and HF_HUB_OFFLINE is set\. Fetch it "
                                          r"with `hf download nobody/tiny-vae`"):
        load_tiny_decoder("nobody/tiny-vae", None, "model.sampler.decoder")
    with pytest.raises(ConfigError, match=r"^model.extractor.model_name: cannot load 'timm/vit_base_patch14_dinov2"
                                          r".lvd142m' \(timm vit_base_patch14_dinov2.lvd142m\) for the extractor: .*"
                                          r"`hf download timm/vit_base_patch14_dinov2.lvd142m`.*point "
                                          r"model.extractor.model_name at the local folder \(local-dir:FOLDER\)$"):
        TimmExtractor("vit_base_patch14_dinov2.lvd142m")


def test_an_unreachable_hub_fails_on_its_first_connection_error(offline_hub, no_retry, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: one request that fails to connect, no retries, no loader call."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tries = []

    def unreachable(repo_id, **kwargs):
        tries.append(repo_id)
        raise ConnectionError("[Errno -2] Name or service not known")
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(ConfigError) as err:
        load_pretrained(SimpleNamespace(from_pretrained=fail), "stabilityai/sdxl-turbo", "model.prior.pretrained",
                        subfolder="unet")
    assert str(err.value).startswith("model.prior.pretrained: cannot load 'stabilityai/sdxl-turbo' (unet/) for the "
                                     "prior: it is not in the Hugging Face cache and the hub cannot be reached ([Errno "
                                     "-2] Name or service not known). Fetch it with `hf download "
                                     "stabilityai/sdxl-turbo`")
    assert tries == ["stabilityai/sdxl-turbo"]


def test_cached_or_reachable_hub_weights_go_to_the_loader(offline_hub, monkeypatch):
    """Something of the id in the cache, or a hub that answers: the loader runs as before (no request when cached)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    loaded = SimpleNamespace(from_pretrained=lambda source, **kwargs: source)
    (offline_hub / "models--someone--cached" / "snapshots").mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub, "model_info", fail)
    assert load_pretrained(loaded, "someone/cached", "model.prior.pretrained") == "someone/cached"
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id, **kwargs: SimpleNamespace(id=repo_id))
    assert load_pretrained(loaded, "someone/online", "model.prior.pretrained") == "someone/online"
