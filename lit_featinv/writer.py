"""Writes each generated image, the best image, a target | generations grid and metrics.jsonl as it goes."""
from __future__ import annotations

import json
import os
import time

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from .images import grid, save_png


class InversionWriter(BasePredictionWriter):
    """Per generated image: ``images/ID_J.png``, ``best/ID_J.png``, one line of ``metrics.jsonl``; per target:
    ``grids/ID.png`` (target | generations). Files are named by sample id and written atomically.

    Args:
        output_dir: where to write; default ``<trainer.default_root_dir>/featinv``.
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def resolve_dir(self, trainer) -> str:
        return self.output_dir or os.path.join(trainer.default_root_dir, "featinv")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.dir, "metrics.jsonl")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dir = self.resolve_dir(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        os.makedirs(self.dir, exist_ok=True)
        if trainer.is_global_zero and os.path.exists(self.metrics_path):  # keep an earlier run's metrics
            kept = os.path.join(self.dir, f"metrics.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
            os.replace(self.metrics_path, kept)
            rank_zero_info(f"lit_featinv: earlier metrics moved to {kept}")
        trainer.strategy.barrier()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        lines, by_target = [], {}
        for rec in prediction:
            stem = f"{rec['id']}_{rec['sample']}"
            paths = {"image": f"images/{stem}.png", "best_image": f"best/{stem}.png"}
            save_png(rec["image"], os.path.join(self.dir, paths["image"]))
            save_png(rec["best_image"], os.path.join(self.dir, paths["best_image"]))
            by_target.setdefault(rec["id"], [rec["target_image"]] if rec["target_image"] is not None else [])
            by_target[rec["id"]].append(rec["image"])
            extra = {"target_image": os.path.abspath(rec["source"])} if rec["target_image"] is not None else {}
            lines.append(json.dumps({"id": rec["id"], "sample": rec["sample"], "seed": rec["seed"], **paths,
                                     "target_source": rec["source"], **extra, **rec["metrics"]}))
        for sample_id, tiles in by_target.items():
            save_png(grid(tiles), os.path.join(self.dir, "grids", f"{sample_id}.png"))
        with open(self.metrics_path, "a") as f:  # one write per batch: whole lines, also with several ranks
            f.write("".join(line + "\n" for line in lines))

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()
        if not trainer.is_global_zero or not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        cos = torch.tensor([r["cosine"] for r in rows])
        print(f"lit_featinv: {len(rows)} images in {os.path.abspath(self.dir)}/images (best: best/, grids: grids/)\n"
              f"lit_featinv: metrics in {os.path.abspath(self.metrics_path)}; cosine to target: "
              f"mean {cos.mean():.4f}, worst {cos.min():.4f}")
