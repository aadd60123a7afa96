"""benchmarks/gpu.py (issue 9, item 5) on the CPU with tiny stand-ins: the same prior loading, guidance variants, tiny
decoder, checkpointing, throughput options and table, in seconds."""
import json
import re
import sys

from conftest import ROOT, save_tiny_decoder, tiny_paper_extractors


def test_gpu_script_measures_every_case_on_tiny_models(tmp_path, sd_prior, open_clip_name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu
    tiny = save_tiny_decoder(tmp_path / "taesd", channels=3)
    extractors = tiny_paper_extractors(open_clip_name)  # gpu.py's default --extractors: all but vit_h14_518
    assert gpu.main(["--device", "cpu", "--iters", "1", "--out", str(tmp_path), "--sd", str(sd_prior),
                     "--tiny-decoder", str(tiny), "--compile-backend", "eager"], extractors=extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    names = ("clip_rn50", "resnet50", "vit_h14_518_bf16")
    cases = [(v, e, b, c) for e in names for v in gpu.VARIANTS for c in ("off", "on") for b in (1, 4)]
    assert [(r["variant"], r["extractor"], r["batch"], r["ckpt"]) for r in rows[:len(cases)]] == cases
    assert [r["options"] for r in rows[len(cases):]] == ["none", "channels_last", "channels_last + compile (eager)"]
    assert all(r["finite"] and r["ms"] > 0 and "error" not in r for r in rows)
    text = (tmp_path / "gpu.md").read_text()
    assert "- command: `python benchmarks/gpu.py --device cpu" in text
    assert len(re.findall(r"^\| \w+(\+tiny_decoder)? \| \w+ \| bf16 autocast \| [14] \| (on|off) \| .+ \| [0-9.]+ \| "
                          r"[0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$", text, re.M)) == len(rows)
