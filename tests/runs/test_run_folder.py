"""Unattended runs: a run folder is one run (resume, config contract, lock), stop signals, kill -9, several
processes writing each generation exactly once, NaN generations, output file modes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (ROOT, documentation, assert_same, cli_config, command, finish, lines, snapshot, start, wait_for_lines,
                      write_images)
from lit_featinv.app.cli import main
from lit_featinv.errors import ConfigError
from lit_featinv.runs.folder import RunFolder

TARGETS = 5  # an odd count; the shared run (setup) takes one target a batch


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pixel_prior, timm_dir):
    """Targets and a config file whose batches take about a second each on the CPU."""
    folder = tmp_path_factory.mktemp("runs")
    write_images(folder / "targets", count=TARGETS)
    run = cli_config(pixel_prior, timm_dir, folder / "targets", batch_size=1, num_inference_steps=30)
    (folder / "run.yaml").write_text(yaml.safe_dump(run))
    return folder


def assert_shown_in_readme(message: str, out: Path) -> None:
    """The documentation shows this message as it is printed (the folder as runs/x)."""
    assert f"\n{message.replace(str(out), 'runs/x')}\n" in documentation()


@pytest.fixture(scope="module")
def uninterrupted(setup):
    out = setup / "uninterrupted"
    code, err = finish(start(setup / "run.yaml", out))
    assert code == 0, err[-3000:]
    return snapshot(out)


def test_kill_9_then_rerun_resumes_to_the_same_files(setup, uninterrupted):
    out = setup / "killed"
    proc = start(setup / "run.yaml", out)
    wait_for_lines(proc, out, 4)  # two batches written, the third in progress
    proc.kill()
    proc.wait()
    done = len(lines(out))
    assert 4 <= done < 2 * TARGETS
    assert json.loads((out / ".lock").read_text())["pid"] == proc.pid  # a stale lock stays behind
    (out / "images" / ".tmp-killed.png").write_bytes(b"half a png")  # as a kill during a write leaves them
    (out / "best" / "coats").mkdir()
    (out / "best" / "coats" / ".tmp-killed.png").write_bytes(b"")  # (ids with '/' write into subfolders)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"id": "img4", "sam')
    code, err = finish(start(setup / "run.yaml", out))
    assert code == 0, err[-3000:]
    assert_same(snapshot(out), uninterrupted)  # bit-identical images, one metrics line each, no temporary file
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("signum, devices", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_stop_signal_ends_cleanly_and_a_rerun_resumes(setup, uninterrupted, signum, devices):
    """The signal goes to the command's process (with 2 devices: rank 0, which passes it on to rank 1)."""
    out = setup / f"stopped_{signum}_{devices}"
    ddp = ("--trainer.devices", "2", "--trainer.strategy", "ddp") if devices > 1 else ()
    proc = start(setup / "run.yaml", out, *ddp)
    wait_for_lines(proc, out, 2)
    proc.send_signal(signum)
    code, err = finish(proc, timeout=60)
    done = len(lines(out))
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"lit-featinv: stopped by {name}: {done} of {2 * TARGETS} generations "
                                            f"done in {out}; rerun the same command to resume")
    assert done < 2 * TARGETS and not list(out.rglob(".tmp-*")) and not (out / ".lock").exists()
    if signum == signal.SIGTERM and devices == 1:
        assert_shown_in_readme(err.strip().splitlines()[-1].replace(f": {done} of", ": 6 of"), out)
    code, err = finish(start(setup / "run.yaml", out, *ddp))
    assert code == 0, err[-3000:]
    assert_same(snapshot(out), uninterrupted, config=devices == 1)


def test_another_config_into_a_started_folder_is_refused_or_overwritten(setup, uninterrupted, tmp_path):
    out = tmp_path / "run"
    code, _ = finish(start(setup / "run.yaml", out, "--data.init_args.limit", "1"))
    assert code == 0 and len(lines(out)) == 2
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(setup / "run.yaml"), "--trainer.default_root_dir", str(out),
              "--model.init_args.guidance.init_args.scale", "0.8"])
    assert str(stop.value) == (f"lit-featinv: error: writer.output_dir: '{out}' holds a run of another config "
                               f"(data.init_args.limit: 1 -> None, model.init_args.guidance.init_args.scale: 0.5 -> 0.8); rerun "
                               f"with the same config to resume it, choose another folder, or start it afresh with "
                               f"--writer.overwrite true")
    assert_shown_in_readme(str(stop.value), out)
    assert len(lines(out)) == 2  # nothing lost
    # what does not change the outputs may change: progress bars, devices
    main(["predict", "--config", str(setup / "run.yaml"), "--trainer.default_root_dir", str(out),
          "--data.init_args.limit", "1", "--model.init_args.progress", "true", "--trainer.enable_progress_bar", "true"])
    assert len(lines(out)) == 2
    main(["predict", "--config", str(setup / "run.yaml"), "--trainer.default_root_dir", str(out),
          "--writer.overwrite", "true"])
    assert_same(snapshot(out), uninterrupted)


def test_a_second_run_into_a_locked_folder_names_the_holder(setup, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-11-26 10:00:00"}  # alive, not us
    (out / ".lock").write_text(json.dumps(holder))
    with pytest.raises(ConfigError, match=rf"^writer.output_dir: '{out}' is in use by process {os.getppid()} on "
                                          rf"{holder['host']} since 2026-11-26 10:00:00"):
        RunFolder(out).open()
    other_host = {"pid": 4242, "host": "node07", "started": "2026-11-26 10:00:00"}  # cannot be checked: refused
    (out / ".lock").write_text(json.dumps(other_host))
    with pytest.raises(ConfigError) as refused:
        RunFolder(out).open()
    assert_shown_in_readme(f"lit-featinv: error: {refused.value}", out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(json.dumps(holder | {"pid": int(dead.stdout)}))
    folder = RunFolder(out)
    folder.open()  # the stale lock of a finished process is taken over
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    folder.release()
    assert not (out / ".lock").exists()


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.parametrize("devices, targets, batch_size", [(2, TARGETS, 1), (3, TARGETS, 2), (3, 1, 1)])
def test_several_processes_write_each_generation_once_as_one_would(setup, pixel_prior, timm_dir, tmp_path, devices,
                                                                   targets, batch_size):
    """DDP on CPU processes (gloo): batches are dealt to ranks whole, so the pixels equal a one-process run's."""
    write_images(tmp_path / "targets", count=targets)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, tmp_path / "targets", batch_size=batch_size)))
    runs = {}
    for n in (1, devices):
        out = tmp_path / f"dev{n}"
        code, err = finish(start(cfg, out, "--trainer.devices", str(n), "--trainer.strategy",
                                 "ddp" if n > 1 else "auto"))
        assert code == 0 and "terminate called" not in err, err[-3000:]  # gloo at exit: cli.main
        runs[n] = snapshot(out)
        assert len(runs[n]["rows"]) == 2 * targets
    assert_same(runs[devices], runs[1], config=False)  # but for trainer.devices


def test_a_killed_rank_then_a_rerun_completes_the_run(setup, uninterrupted, tmp_path):
    out = tmp_path / "ddp"
    proc = start(setup / "run.yaml", out, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    wait_for_lines(proc, out, 2)
    deadline = time.time() + 30
    while not child_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    for pid in child_pids(proc.pid):  # rank 1 (Lightning's launcher starts it as a child of rank 0)
        os.kill(pid, signal.SIGKILL)
    code, _ = finish(proc, timeout=120)
    assert code != 0
    code, err = finish(start(setup / "run.yaml", out, "--trainer.devices", "2", "--trainer.strategy", "ddp"))
    assert code == 0 and "terminate called" not in err, err[-3000:]
    assert_same(snapshot(out), uninterrupted, config=False)


def test_under_torchrun_each_process_runs_the_command_and_the_run_is_the_same(setup, uninterrupted, tmp_path):
    """torchrun (as on each node of a multi-node job; SLURM's srun alike) starts every process with the same command;
    rank 0 alone opens the run folder, the ranks share the batches."""
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *command(setup / "run.yaml", out, "--trainer.devices", "2", "--trainer.strategy", "ddp")[1:]]
    run = subprocess.run(cmd, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "terminate called" not in run.stderr, run.stderr[-3000:]
    assert_same(snapshot(out), uninterrupted, config=False)


def test_a_generation_that_becomes_nan_is_recorded_not_written(pixel_prior, timm_dir, image_dir, tmp_path, monkeypatch,
                                                               capsys):
    from lit_featinv import DiffusionPrior
    denoise = DiffusionPrior.denoise

    def poisoned(self, sample, t):  # the first sample of each batch turns NaN at t < 500
        out = denoise(self, sample, t)
        return torch.cat([out[:1] * float("nan"), out[1:]]) if int(t) < 500 else out
    monkeypatch.setattr(DiffusionPrior, "denoise", poisoned)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir, batch_size=3)))
    with pytest.warns(UserWarning, match="NaN or Inf"), pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    assert str(stop.value).startswith("lit-featinv: 1 generation(s) failed")
    rows = {(r["id"], r["sample"]): r for r in lines(tmp_path / "out")}
    assert rows["img0", 0]["status"] == "nonfinite" and rows["img0", 0]["failed_step"] >= 1
    assert "image" not in rows["img0", 0] and not (tmp_path / "out" / "images" / "img0_0.png").exists()
    assert all(r["status"] == "ok" for key, r in rows.items() if key != ("img0", 0)) and len(rows) == 6
    assert "1 generation(s) became NaN/Inf and were not written" in capsys.readouterr().out


def test_an_image_that_fails_to_decode_is_skipped_and_listed(pixel_prior, timm_dir, tmp_path, capsys):
    from PIL import Image
    write_images(tmp_path / "targets", count=2)
    noise = torch.randint(0, 256, (128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Image.fromarray(noise.numpy()).save(tmp_path / "targets" / "broken.jpg", quality=95)
    data = (tmp_path / "targets" / "broken.jpg").read_bytes()
    (tmp_path / "targets" / "broken.jpg").write_bytes(data[: len(data) // 2])  # passes the pre-scan, not the decode
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, tmp_path / "targets",
                                                             batch_size=3)))
    with pytest.warns(UserWarning, match=r"data.images: skipped 1 image\(s\) that could not be decoded: .*broken.jpg"):
        with pytest.raises(SystemExit) as stop:
            main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "o")])
    assert "1 target image(s) were unreadable" in str(stop.value)
    assert sorted(r["id"] for r in lines(tmp_path / "o")) == ["img0", "img0", "img1", "img1"]
    assert "1 target image(s) could not be decoded: " in capsys.readouterr().out


def test_outputs_are_readable_by_all_like_other_files(pixel_prior, timm_dir, image_dir, tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes == {0o666 & ~umask}


@pytest.mark.parametrize("key, value, message", [
    ("model.init_args.guidance.init_args.scale", ".nan", "model.guidance.scale: nan is not a finite number"),
    ("model.init_args.guidance.init_args.scale", "-1", "model.guidance.scale: -1.0 < 0 guides away from the target; "
                                                       "set model.guidance.allow_negative: true if that is meant"),
    ("model.init_args.stop_cosine", "1.5", "model.stop_cosine: 1.5 is not a cosine in (-1, 1]"),
    ("data.init_args.batch_size", "0", "data.batch_size: 0 is not a number of targets (>= 1)"),
    ("model.init_args.num_inference_steps", "1001", "model.num_inference_steps: 1001 is more than the 1000 steps "
                                                    "the model was trained with (num_train_timesteps)"),
])
def test_bad_numbers_are_one_line(pixel_prior, timm_dir, image_dir, tmp_path, key, value, message):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(tmp_path / "run.yaml"), f"--{key}", value,
              "--trainer.default_root_dir", str(tmp_path / "out")])
    assert str(stop.value) == f"lit-featinv: error: {message}"


@pytest.mark.parametrize("content, message", [
    ({"feature": torch.ones(4)}, "holds a dict, not a tensor of features with shape [D] or [N, D]"),
    ([torch.ones(4)], "holds a list, not a tensor of features with shape [D] or [N, D]"),
    (torch.ones(0, 4), "holds no features (shape [0, 4])"),
])
def test_bad_feature_files_are_one_line_before_any_model_loads(pixel_prior, timm_dir, tmp_path, monkeypatch, content,
                                                               message):
    import lit_featinv.models.priors
    monkeypatch.setattr(lit_featinv.models.priors.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    torch.save(content, tmp_path / "f.pt")
    cfg = cli_config(pixel_prior, timm_dir, tmp_path)
    cfg["data"]["init_args"] = {"features": str(tmp_path / "f.pt")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "o")])
    assert str(stop.value) == f"lit-featinv: error: data.features: '{tmp_path / 'f.pt'}' {message}"


def test_bad_output_folders_and_paths_are_one_line_before_any_model_loads(pixel_prior, timm_dir, image_dir, tmp_path,
                                                                         monkeypatch):
    import lit_featinv.models.priors
    monkeypatch.setattr(lit_featinv.models.priors.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cli_config(pixel_prior, timm_dir, image_dir)))
    (tmp_path / "file").write_text("")
    cases = {("--writer.output_dir", str(tmp_path / "file")): f"writer.output_dir: '{tmp_path / 'file'}' is a file, "
                                                               f"not a folder",
             ("--writer.output_dir", "/proc/lit-featinv"): "writer.output_dir: cannot write to '/proc/lit-featinv': ",
             ("--data.init_args.images", str(tmp_path / "none")): f"data.init_args.images: no such file or folder "
                                                                   f"'{tmp_path / 'none'}'"}
    for args, message in cases.items():
        with pytest.raises(SystemExit) as stop:
            main(["predict", "--config", str(tmp_path / "run.yaml"), *args])
        assert str(stop.value).startswith(f"lit-featinv: error: {message}"), str(stop.value)
        assert "\n" not in str(stop.value)


def test_messages_keep_their_quotes(monkeypatch):
    import lit_featinv.app.cli

    def failing(args=None):
        raise ConfigError("model.extractor.layer", "no submodule 'layer9'")
    monkeypatch.setattr(lit_featinv.app.cli, "run", failing)
    with pytest.raises(SystemExit, match=r"^lit-featinv: error: model.extractor.layer: no submodule 'layer9'$"):
        main(["predict"])
