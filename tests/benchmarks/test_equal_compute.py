"""benchmarks/equal_compute.py (issue 35, goal 3): the best saved generation per target, a failed one left out."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import equal_compute  # noqa: E402


def test_each_targets_best_generation_is_its_highest_cosine_and_a_failed_target_has_none():
    lines = [{"id": "a", "sample": 0, "cosine": 0.91}, {"id": "a", "sample": 1, "cosine": 0.97},
             {"id": "b", "sample": 0, "cosine": 0.99, "status": "failed"}, {"id": "b", "sample": 1, "cosine": None},
             {"id": "c", "sample": 0, "cosine": 0.5}, {"id": "a", "sample": 2, "cosine": 0.93}]
    best = equal_compute.best_per_target(lines)
    assert [(b["id"], b["cosine"]) for b in best] == [("a", 0.97), ("b", None), ("c", 0.5)]
    assert best[0]["sample"] == 1


def test_reuse_reads_a_finished_run_of_the_same_settings_and_reruns_otherwise(tmp_path, monkeypatch):
    import json
    calls = []

    def fake_run(argv):
        calls.append(argv)
        folder = argv[argv.index("--trainer.default_root_dir") + 1]
        (tmp_path / "out" / "preset").mkdir(parents=True, exist_ok=True)
        line = {"id": "t0", "sample": 0, "cosine": 0.9, "nfe": 400, "unet_backward": 400, "image": "images/a.png"}
        with open(f"{folder}/metrics.jsonl", "w") as f:
            f.write(json.dumps(line) + "\n")

    monkeypatch.setattr(equal_compute, "run", fake_run)
    monkeypatch.setattr(equal_compute, "agreement", lambda scored, folder, vit: 1.0)
    monkeypatch.setattr(equal_compute, "of_images", lambda config, paths: {"prior_score_median": 0.1, "kid": 0.0})
    monkeypatch.setattr(equal_compute, "saved_spread", lambda lines, folder: 0.0)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "t0.png").write_bytes(b"")
    measure = lambda threads, reuse: equal_compute.measure(  # noqa: E731
        "preset", "c.yaml", [], str(targets), str(tmp_path / "out"), threads, reuse)
    first = measure(2, True)  # nothing finished yet: runs
    assert len(calls) == 1 and first["best_mean"] == 0.9
    assert measure(2, True)["s_per_target"] == first["s_per_target"] and len(calls) == 1  # reused, its seconds kept
    measure(1, True)  # another thread count: runs again (resuming its folder: its seconds are not known)
    overwrite = lambda argv: argv[argv.index("--writer.overwrite") + 1]  # noqa: E731
    assert len(calls) == 2 and overwrite(calls[0]) == overwrite(calls[1]) == "false"
    assert measure(1, False)["s_per_target"] is not None and overwrite(calls[2]) == "true"  # no --reuse: afresh
    (tmp_path / "out" / "preset" / "seconds.json").unlink()  # a run killed before its end: resumed with --reuse
    resumed = measure(1, True)
    assert len(calls) == 4 and overwrite(calls[3]) == "false" and resumed["s_per_target"] is None
    assert equal_compute.seconds(resumed) == "-" and equal_compute.seconds(first) != "-"


def test_tabulate_compares_the_targets_every_sampler_has_finished(tmp_path, monkeypatch):
    """--tabulate runs nothing: each sampler's row over the targets all samplers have all 4 generations of."""
    import json
    monkeypatch.setattr(equal_compute, "run", lambda argv: (_ for _ in ()).throw(AssertionError("ran")))
    monkeypatch.setattr(equal_compute, "agreement", lambda scored, folder, vit: 1.0)
    monkeypatch.setattr(equal_compute, "of_images", lambda config, paths: {"prior_score_median": 0.1, "kid": 0.0})
    monkeypatch.setattr(equal_compute, "saved_spread", lambda lines, folder: 0.0)
    done = {"preset": {"t0": 4, "t1": 4, "t2": 4}, "particles": {"t0": 4, "t1": 2}}  # particles stopped in t1
    for name, targets in done.items():
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "metrics.jsonl", "w") as f:
            for target, n in targets.items():
                for j in range(n):
                    f.write(json.dumps({"id": target, "sample": j, "cosine": 0.9 + j / 100 + (target == "t2") * 0.05,
                                        "nfe": 400, "unet_backward": 400, "image": f"images/{target}_{j}.png"}) + "\n")
    monkeypatch.setattr(sys, "argv", ["equal_compute.py", "--out", str(tmp_path), "--tabulate", "--threads", "2"])
    equal_compute.main()
    text = (tmp_path / "results.md").read_text()
    assert "over the targets every sampler had finished: 1;" in text
    rows = [line for line in text.splitlines() if line.startswith(("| preset |", "| particles |"))]
    assert len(rows) == 2 and all("| 1 | 1600 | 1600 | - | 0.9300 | 0.9300 |" in r for r in rows), rows


def test_only_runs_the_chosen_test_images(tmp_path, monkeypatch):
    """--only I,J: the targets folder holds test images I and J alone (a screen on chosen targets)."""
    exported, ran = [], []
    monkeypatch.setattr(equal_compute, "export", lambda out, count, indices=None: exported.append(indices))
    monkeypatch.setattr(equal_compute, "measure", lambda name, *a, **k: ran.append(name) or {"per_target": {}})
    monkeypatch.setattr(equal_compute, "write", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["equal_compute.py", "--out", str(tmp_path), "--only", "51,27", "--sampler",
                                      "p=c.yaml"])
    equal_compute.main()
    assert exported == [[51, 27]] and ran == ["p"]


def test_the_saved_spread_is_the_rms_distance_between_a_targets_saved_generations(tmp_path):
    """Two targets: copies of one image (spread 0) and two images 0.2 apart at every pixel; a failed one left out."""
    import numpy as np
    from PIL import Image
    (tmp_path / "images").mkdir()
    for name, value in {"a0": 51, "a1": 51, "b0": 0, "b1": 51, "b2": 255}.items():
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(tmp_path / "images" / f"{name}.png")
    lines = [{"id": "a", "image": "images/a0.png"}, {"id": "a", "image": "images/a1.png"},
             {"id": "b", "image": "images/b0.png"}, {"id": "b", "image": "images/b1.png"},
             {"id": "b", "image": "images/b2.png", "status": "failed"}, {"id": "c", "image": "images/b0.png"}]
    assert abs(equal_compute.saved_spread(lines, str(tmp_path)) - (0.0 + 0.2) / 2) < 1e-6
