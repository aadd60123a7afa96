"""benchmarks/gpu.py (issue 9, item 5) on the CPU with tiny stand-ins: the same prior loading, guidance variants, tiny
decoder, checkpointing, throughput options and table, in seconds."""
import json
import re
import sys

from conftest import ROOT, save_tiny_decoder


def test_gpu_script_measures_every_case_on_tiny_models(tmp_path, sd_prior, open_clip_name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu
    from lit_featinv import OpenClipExtractor, TorchvisionExtractor
    tiny = save_tiny_decoder(tmp_path / "taesd", channels=3)
    extractors = {"clip_rn50": ("tiny open_clip", lambda: OpenClipExtractor(open_clip_name, pretrained=None)),
                  "resnet50": ("tiny resnet", lambda: TorchvisionExtractor("tiny_resnet")),
                  "vit_h14_518_bf16": ("tiny vit", lambda: TorchvisionExtractor("tiny_vit", autocast=True))}
    assert gpu.main(["--device", "cpu", "--iters", "1", "--out", str(tmp_path), "--sd", str(sd_prior),
                     "--tiny-decoder", str(tiny), "--compile-backend", "eager"], extractors=extractors) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    cases = [(v, e, b, c) for e in extractors for v in gpu.VARIANTS for c in ("off", "on") for b in (1, 4)]
    assert [(r["variant"], r["extractor"], r["batch"], r["ckpt"]) for r in rows[:len(cases)]] == cases
    assert [r["options"] for r in rows[len(cases):]] == ["none", "channels_last", "channels_last + compile (eager)"]
    assert all(r["finite"] and r["ms"] > 0 and "error" not in r for r in rows)
    text = (tmp_path / "gpu.md").read_text()
    assert "- command: `python benchmarks/gpu.py --device cpu" in text
    assert len(re.findall(r"^\| \w+(\+tiny_decoder)? \| \w+ \| bf16 autocast \| [14] \| (on|off) \| .+ \| [0-9.]+ \| "
                          r"[0-9.]+ \| n/a \| n/a \| n/a \| n/a \|  \|$", text, re.M)) == len(rows)
