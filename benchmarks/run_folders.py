"""Images a benchmark made (or chose: exact posterior draws, real data neighbours) as a run folder that
``lit-featinv report`` reads: ``images/ID_J.png``, ``metrics.jsonl`` (one line per image) and, if given, ``config.yaml``.
So a benchmark's reference sample can be any report's ``--reference-run``."""
from __future__ import annotations

import itertools
import json
import os

import torch


def write_run(folder: str, ids: list[str], target_files: list[str], images01: torch.Tensor,
              metrics: list[list[dict]] | None = None, config: dict | None = None) -> None:
    """Images [N, G, C, H, W] in [0, 1] of targets ``ids`` (their image files ``target_files``), each with its metrics
    (``metrics[n][g]``: e.g. its cosine), as a run folder."""
    import yaml
    from PIL import Image
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    lines = []
    for (n, sample_id), g in itertools.product(enumerate(ids), range(images01.shape[1])):
        name = f"images/{sample_id}_{g}.png"
        pixels = (images01[n, g].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).squeeze(-1).numpy()
        Image.fromarray(pixels).save(os.path.join(folder, name))
        lines.append(json.dumps({"id": sample_id, "sample": g, "status": "ok", "image": name,
                                 "target_image": target_files[n], **(metrics[n][g] if metrics else {})}))
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if config is not None:
        with open(os.path.join(folder, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
