"""The outputs of a checkout, for a byte-for-byte comparison of two versions (a change that should not change any
image, such as a new layout): every preset on tiny models (the tests' own overrides, tests/app/test_presets.py), the
quick start on the zoo (2 threads), the README's Python block and every notebook on tiny settings.

    git worktree add /tmp/before REV
    python benchmarks/same_outputs.py /tmp/before /tmp/out-before     # about 12 minutes on 2 CPU cores
    python benchmarks/same_outputs.py . /tmp/out-after
    diff <(python benchmarks/same_outputs.py --manifest /tmp/out-before /tmp/before) \
         <(python benchmarks/same_outputs.py --manifest /tmp/out-after $PWD)

The tiny models are built once (in ``$LIT_FEATINV_TINY``, default /tmp/lit_featinv-tiny) so both checkouts use the same
files. The manifest is an md5 per file: metrics lines without ``seconds``, the checkout's path read as TREE, the old
key ``backbone`` read as ``prior``; the reports' "s / generation" column is a timing and differs.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

TINY = Path(os.environ.get("LIT_FEATINV_TINY", "/tmp/lit_featinv-tiny"))


def manifest(out: Path, tree: str) -> None:
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix in (".jsonl", ".yaml", ".txt", ".html", ".json", ".log"):
            text = data.decode().replace(tree, "TREE").replace("backbone", "prior")
            if path.name == "metrics.jsonl":
                rows = [json.loads(line) for line in text.splitlines()]
                text = "\n".join(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in rows)
            if path.suffix == ".log":
                text = "\n".join(line for line in text.splitlines() if "Predicting" not in line)
            data = text.encode()
        print(hashlib.md5(data).hexdigest(), path.relative_to(out))


def main():
    if sys.argv[1] == "--manifest":
        return manifest(Path(sys.argv[2]), sys.argv[3])
    tree, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    parts = sys.argv[3:] or ["presets", "quickstart", "readme", "notebooks"]
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1")
    if "presets" in parts:
        subprocess.run([sys.executable, __file__, "--presets", str(tree), str(out)], env=env | {"OMP_NUM_THREADS": "1"},
                       check=True)
    if "quickstart" in parts:
        (out / "quickstart").mkdir(exist_ok=True)
        with open(out / "quickstart" / "run.log", "w") as log:
            subprocess.run([sys.executable, "-m", "lit_featinv", "predict", "--config", "quickstart", "--threads", "2",
                            "--trainer.enable_progress_bar", "false", "--model.init_args.progress", "false",
                            "--writer.output_dir", str(out / "quickstart")], env=env, check=True, stdout=log)
    if "readme" in parts:
        page = tree / "docs" / "api.md" if (tree / "docs" / "api.md").is_file() else tree / "README.md"  # before issue 37
        block = re.search(r"```python\n(# Python API.*?)```", page.read_text(), re.S).group(1)
        (out / "readme").mkdir(exist_ok=True)
        with open(out / "readme" / "stdout.log", "w") as log:
            subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(2)\n" + block],
                           cwd=out / "readme", env=env, check=True, stdout=log)
    if "notebooks" in parts:
        import nbclient
        import nbformat
        tiny = {"TARGETS": 2, "GENERATIONS": 2, "STEPS": 2, "RECURRENCE": 1}
        os.environ.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        for path in sorted((tree / "notebooks").glob("*.ipynb")):
            notebook = nbformat.read(path, as_version=4)
            cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
            names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and line[0] != "#"}
            cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in tiny.items() if k in names)
            cell.source += f"\nOUT = {str(out / 'notebooks' / path.stem)!r}"
            nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(path.parent)}}).execute()
            text = [o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                    if o.output_type == "stream" and o.get("name") == "stdout"]
            (out / "notebooks" / path.stem / "stdout.log").write_text("".join(text))


def presets(tree: Path, out: Path) -> None:
    """Every preset on the tiny models, as the preset test (test_presets.py) runs them (one process, tiny models built once)."""
    import shutil

    import torch
    import yaml
    torch.set_num_threads(1)
    sys.path.insert(0, str(tree / "tests"))
    sys.path.insert(0, str(tree / "tests" / "app"))  # where test_presets.py is since the layout of issue 18
    import conftest
    import test_presets
    from conftest import save_pixel_prior, save_stable_diffusion, save_timm, write_images
    if not TINY.exists():
        from diffusers import AutoencoderKL
        save_stable_diffusion(TINY / "sd")
        latent = TINY / "latent0"
        torch.manual_seed(0)
        AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
                      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                      sample_size=16, scaling_factor=0.7).save_pretrained(latent / "vae")
        conftest.tiny_unet(4, 8).save_pretrained(latent / "unet")
        conftest.tiny_scheduler().save_pretrained(latent / "scheduler")
        pixel = save_pixel_prior(TINY / "pixel")
        latent = shutil.copytree(latent, TINY / "latent")
        for tiny, zoo in ((pixel, "fmnist-ddpm"), (latent, "fmnist-ldm")):
            shutil.copy(conftest.ZOO / zoo / "scheduler" / "scheduler_config.json",
                        tiny / "scheduler" / "scheduler_config.json")
        save_timm(TINY / "resnet", "test_resnet")
        save_timm(TINY / "vit", "test_vit", img_size=16, patch_size=4)
        (TINY / "open_clip").mkdir()
        config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8,
                                                  "patch_size": None},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
        (TINY / "open_clip" / "tiny-clip-rn.json").write_text(json.dumps(config))
        write_images(TINY / "targets", count=1, size=40, mode="RGB")
    import open_clip
    open_clip.add_model_config(TINY / "open_clip" / "tiny-clip-rn.json")
    sources = {"CompVis/stable-diffusion-v1-4": str(TINY / "sd"), "assets/zoo/fmnist-ddpm": str(TINY / "pixel"),
               "assets/zoo/fmnist-ldm": str(TINY / "latent"),
               "local-dir:assets/zoo/fmnist-resnet10t": f"local-dir:{TINY / 'resnet'}",
               "local-dir:assets/zoo/fmnist-vit-tiny": f"local-dir:{TINY / 'vit'}",
               "RN50-quickgelu": "tiny-clip-rn", "resnet50": "tiny_resnet", "vit_h_14": "tiny_vit"}
    main = test_presets.main
    for name in test_presets.PRESETS:
        preset = yaml.safe_load((tree / "configs" / f"{name}.yaml").read_text())
        folder = out / "presets" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder.parent / f"{folder.name}.tiny.yaml").write_text(
            yaml.safe_dump(test_presets.tiny_overrides(preset, sources, TINY / "targets")))
        main(["predict", "--config", name, "--config", str(folder.parent / f"{folder.name}.tiny.yaml"),
              "--writer.output_dir", str(folder), "--trainer.default_root_dir", str(folder)])


if __name__ == "__main__":
    if sys.argv[1] == "--presets":
        presets(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
