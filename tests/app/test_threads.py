"""CPU threads: ``threads: auto`` takes the usable cores that no other process keeps busy, a number or
OMP_NUM_THREADS wins over it, and a run folder keeps its count (it decides the float summation order)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import cli_config
from lit_featinv.app import threads
from lit_featinv.app.cli import main
from lit_featinv.errors import ConfigError


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in threads.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 1.0, 1), (2, 2.0, 1), (2, 0.3, 2), (16, 3.2, 13),
                                                   (1, 0.0, 1)])
def test_auto_takes_the_cores_no_other_process_keeps_busy(monkeypatch, cores, busy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.3: busy)
    count, why = threads.choose("auto")
    assert count == expected == torch.get_num_threads()
    assert why == f"{cores} cores, {busy:.1f} busy with other processes"


def test_a_number_or_the_environment_wins_over_auto(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.3: pytest.fail("auto measured the load"))
    assert threads.choose(3) == (3, "threads in the config") and torch.get_num_threads() == 3
    assert threads.choose("2")[0] == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)  # what torch does with OMP_NUM_THREADS at start-up
    assert threads.choose("auto") == (1, "OMP_NUM_THREADS=1")
    assert threads.choose("auto", recorded=2) == (2, "kept from the run folder's config")


@pytest.mark.parametrize("value, message", [(0, "threads: 0 is not a thread count (>= 1, or auto)"),
                                            ("many", "threads: 'many' is not a thread count (>= 1) or auto")])
def test_a_bad_count_is_one_line(value, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        threads.choose(value)


def test_busy_cores_sees_a_busy_process():
    """A single-threaded spinning process keeps about one core busy; this one, asleep, none."""
    if threads.cpu_times() is None:
        pytest.skip("no /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        threads.busy_cores(0.3)  # let it start
        busy = threads.busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.7 <= busy <= threads.usable_cores()


def test_a_run_records_its_count_and_a_resume_keeps_it(pixel_prior, timm_dir, image_dir, tmp_path, monkeypatch,
                                                       capsys):
    config = cli_config(pixel_prior, timm_dir, image_dir, num_inference_steps=1, recurrence=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    run = ["predict", "--config", str(tmp_path / "run.yaml"), "--writer.output_dir", str(out)]
    main(run + ["--threads", "1", "--data.init_args.limit", "1"])  # stopped after one target, as if killed
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1
    monkeypatch.setattr(threads, "auto", lambda: pytest.fail("a resume chose its count again"))
    with pytest.raises(SystemExit, match=r"threads: 1 -> 2"):  # another count: other images
        main(run + ["--threads", "2", "--data.init_args.limit", "1"])
    capsys.readouterr()
    main(run + ["--data.init_args.limit", "1"])  # auto: the recorded count
    assert "lit_featinv: 1 CPU thread(s) (kept from the run folder's config)" in capsys.readouterr().err
    assert torch.get_num_threads() == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # resumed: nothing done twice
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["status"] == "ok"
