"""Nothing silently wrong: faults injected into real run folders of the tiny models (then a rerun), signals sent by
``os.kill`` to the command's process, odd targets; each test asserts the end state (files present, lines whole,
nothing redone that was finished, exit codes as docs/clusters.md says)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from conftest import assert_same, cli_config, finish, lines, snapshot, start, write_images
from lit_featinv.app.cli import main
from lit_featinv.runs.images import TEXT, font


@pytest.fixture
def run(tmp_path, pixel_prior, timm_dir):
    """``run(*extra)``: the command in this process on 3 tiny targets (2 generations each, one target a batch),
    into ``tmp_path / "out"``; returns that folder."""
    write_images(tmp_path / "targets", count=3)
    config = cli_config(pixel_prior, timm_dir, tmp_path / "targets", batch_size=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))

    def go(*extra: str):
        main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out"),
              *extra])
        return tmp_path / "out"
    return go


def mtimes(out) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.png")}


@pytest.mark.parametrize("where", ["middle", "last"])
def test_unreadable_metrics_lines_are_set_aside_and_their_generations_made_again(run, where):
    out = run()
    before, written = snapshot(out), mtimes(out)
    text = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    n = 2 if where == "middle" else len(text)  # line n (1-based) becomes garbage, ending in a newline
    broken = text[n - 1]
    text[n - 1] = "{not json at all\n"
    (out / "metrics.jsonl").write_text("".join(text))
    time.sleep(0.01)
    with pytest.warns(UserWarning, match=rf"metrics.jsonl: line\(s\) {n} could not be read; they are kept in "
                                         rf"metrics.jsonl.unreadable and the generations they were are made again"):
        run()
    assert (out / "metrics.jsonl.unreadable").read_text() == "{not json at all\n"
    after = snapshot(out)
    del after["files"]["metrics.jsonl.unreadable"]
    assert_same(after, before)  # every line whole, the lost generation's line back, the same bytes
    redone = json.loads(broken)
    changed = {name for name, t in mtimes(out).items() if t != written[name]}
    assert {f"images/{redone['id']}_{redone['sample']}.png"} <= changed  # made again ...
    assert all(name.split("/")[-1].startswith(redone["id"]) for name in changed)  # ... and nothing of another target


@pytest.mark.parametrize("folder", ["images", "best"])
def test_a_deleted_png_is_made_again_and_nothing_else(run, folder):
    out = run()
    before, written = snapshot(out), mtimes(out)
    (out / folder / "img1_1.png").unlink()
    with pytest.warns(UserWarning, match=r"1 finished generation\(s\) lack their image files in .* \(img1_1\); they "
                                         r"are made again"):
        run()
    assert_same(snapshot(out), before)
    assert len(lines(out)) == 6  # one line per generation: the stale one was dropped, the new one written
    changed = {name for name, t in mtimes(out).items() if name in written and t != written[name]}
    assert changed <= {"images/img1_0.png", "images/img1_1.png", "best/img1_0.png", "best/img1_1.png",
                       "grids/img1.png"}  # only the target whose image was gone


def test_a_regenerated_target_keeps_its_whole_grid(run):
    """A generation made again draws its target's grid with every generation, as the first run did."""
    out = run()
    grid = (out / "grids" / "img2.png").read_bytes()
    (out / "images" / "img2_0.png").unlink()
    with pytest.warns(UserWarning, match="lack their image files"):
        run()
    assert (out / "grids" / "img2.png").read_bytes() == grid


@pytest.fixture
def slow(tmp_path, pixel_prior, timm_dir):
    """A config whose batches take about a second each (30 steps), for signals."""
    write_images(tmp_path / "targets", count=3)
    config = cli_config(pixel_prior, timm_dir, tmp_path / "targets", batch_size=1, num_inference_steps=30)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "run.yaml"


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("gap", [0.02, 0.12])
def test_ctrl_c_pressed_again_and_again_exits_130_with_one_line(slow, tmp_path, gap):
    out = tmp_path / "out"
    proc = start(slow, out)
    while not lines(out):  # the guided loop runs
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    for _ in range(3):
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(gap)
    code, err = finish(proc, timeout=60)
    assert code == 130, err[-3000:]
    assert err.count("stopped by SIGINT") == 1 and "KeyboardInterrupt" not in err and "Traceback" not in err
    assert last_line(err).startswith("lit-featinv: stopped by SIGINT: ") and not (out / ".lock").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_start_up_ends_in_one_line_and_leaves_no_lock(slow, tmp_path, signum):
    """Right after the thread line (the run folder is open and locked, the models load): the one line, 128 + the
    signal's number, and the lock released."""
    out = tmp_path / "out"
    proc = start(slow, out)
    while "CPU thread(s)" not in proc.stderr.readline():
        assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signum)
    code, err = finish(proc, timeout=60)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-3000:]
    assert last_line(err) in (f"lit-featinv: stopped by {name}: 0 generations done in {out}; rerun the same command "
                              f"to resume", f"lit-featinv: stopped by {name}: 0 of 6 generations done in {out}; rerun "
                                            f"the same command to resume")
    assert "Traceback" not in err and not (out / ".lock").exists() and not lines(out)


def test_a_signal_while_the_command_loads_ends_in_one_line(slow, tmp_path):
    """While the config is parsed and the classes are made (Lightning's seed line: torch has loaded; the run folder
    may or may not be open yet)."""
    out = tmp_path / "out"
    proc = start(slow, out)
    while "Seed set to" not in proc.stderr.readline():
        assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGTERM)
    code, err = finish(proc, timeout=60)
    assert code == 143, err[-3000:]
    assert last_line(err).startswith("lit-featinv: stopped by SIGTERM: ") and "Traceback" not in err
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_an_all_zero_target_feature_has_no_cosine(run, tmp_path, suffix, capsys):
    """Cosine and relative L2 to a zero vector are undefined: null in the metrics and trajectories, left out of the
    summary, one warning at start-up naming the file and row; the other targets are measured as usual."""
    rows = np.zeros((2, 96), dtype="float32")  # the tiny ResNet's feature size
    rows[1] = np.random.default_rng(0).standard_normal(96)
    path = tmp_path / f"targets{suffix}"
    torch.save(torch.from_numpy(rows), path) if suffix == ".pt" else np.save(path, rows)
    with pytest.warns(UserWarning, match=rf"data.features: 1 target feature\(s\) are all zeros \({path}\[0\]\): they "
                                         rf"have no direction"):
        out = run("--data.init_args.images", "null", "--data.init_args.features", str(path))
    by_id = {(r["id"], r["sample"]): r for r in lines(out)}
    zero, other = by_id[("targets/00000", 0)], by_id[("targets/00001", 0)]
    assert zero["status"] == "ok" and zero["cosine"] is None and zero["rel_l2"] is None and zero["best_cosine"] is None
    assert zero["loss"] > 0 and isinstance(other["cosine"], float)
    traces = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert all(v is None for t in traces if t["id"] == "targets/00000" for v in t["cosine"])
    cosines = [r["cosine"] for r in by_id.values() if r["cosine"] is not None]
    printed = capsys.readouterr().out
    assert f"cosine to target: mean {np.mean(cosines):.4f}, worst {min(cosines):.4f}" in printed
    assert "NaN" not in (out / "metrics.jsonl").read_text() + (out / "trajectories.jsonl").read_text()


def test_a_huge_target_image_is_drawn_at_its_generations_size(tmp_path, pixel_prior, timm_dir):
    folder = tmp_path / "targets"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 3000, 3), dtype=np.uint8)).save(folder / "big.png")
    config = cli_config(pixel_prior, timm_dir, folder, num_inference_steps=2, recurrence=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    grid = Image.open(tmp_path / "out" / "grids" / "big.png")
    generation = Image.open(tmp_path / "out" / "images" / "big_0.png")
    assert grid.height == 2 * TEXT + generation.height * 6  # 16 px enlarged to 96: the target at that height too
    assert grid.width < 3 * 100 and (tmp_path / "out" / "grids" / "big.png").stat().st_size < 100_000


def test_labels_are_drawn_with_their_accents(tmp_path, pixel_prior, timm_dir):
    """A target named ``été 1.png``: its label is drawn in a font that has the glyphs (not boxes)."""
    folder = tmp_path / "targets"
    write_images(folder, count=1)
    (folder / "img0.png").rename(folder / "été 1.png")
    config = cli_config(pixel_prior, timm_dir, folder, num_inference_steps=2, recurrence=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "run.yaml"), "--trainer.default_root_dir", str(tmp_path / "out")])
    grid = Image.open(tmp_path / "out" / "grids" / "été 1.png").convert("L")
    title = np.asarray(grid)[:TEXT, :60]
    assert (title < 128).any()

    def drawn(text: str) -> np.ndarray:
        image = Image.new("L", (60, TEXT), 255)
        ImageDraw.Draw(image).text((2, 1), text, fill=0, font=font())
        return np.asarray(image)
    assert np.array_equal(title, drawn("été 1"))  # the grid's title is the label as drawn here ...
    assert not np.array_equal(drawn("été"), drawn("\U000f0000" * 3))  # ... in a font with the glyphs: not boxes
    assert not np.array_equal(drawn("été"), drawn("ete"))


@pytest.mark.parametrize("bars", [True, False])
def test_one_switch_turns_every_bar_off_and_bars_go_to_stderr(run, capfd, bars):
    run("--trainer.enable_progress_bar", str(bars).lower(), "--model.init_args.progress", "true")
    out, err = capfd.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == ["lit_featinv"] * 2  # stdout: the summary alone
    assert ("guided steps" in err) == bars and ("Predicting" in err) == bars


def test_a_stop_passed_on_to_ddp_ranks_is_not_killed_by_lightnings_process_observer(tmp_path):
    """Rank 0 passes a stop on to the ranks its launcher started; each ends with 128 + signal at once, while rank 0
    still finishes its guided iteration. Lightning's observer SIGKILLs rank 0 when it sees a rank end non-zero (it
    polls every 5 s; here every 0.05 s, and rank 0 takes 1 s), unless the ranks were taken off its list first."""
    script = tmp_path / "rank0.py"
    script.write_text(textwrap.dedent("""
        import os, subprocess, sys, time
        from types import SimpleNamespace
        from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
        from lit_featinv.runs.writer import InversionWriter
        rank1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        launcher = SimpleNamespace(procs=[rank1])
        _ChildProcessObserver(main_pid=os.getpid(), child_processes=launcher.procs, sleep_period=0.05).start()
        writer = InversionWriter()
        writer.on_predict_start(SimpleNamespace(strategy=SimpleNamespace(launcher=launcher), is_global_zero=True),
                                None)
        writer.pass_on(15)
        time.sleep(1.0)  # rank 0 ends its iteration
        rank1.wait()
        writer.release_signals()
        sys.exit(100 + (rank1.returncode == -15))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 101, proc.stderr[-2000:]
