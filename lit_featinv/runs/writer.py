"""Writes each generated image, the best image, a target | generations grid and metrics.jsonl as it goes, into a run
folder that a rerun of the same config resumes."""
from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections import Counter

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ..method.records import TRAJECTORY_FORMAT
from .folder import RunFolder, ok, run_stats
from .images import fit_height, grid, save_png
from .signals import STOP


class InversionWriter(BasePredictionWriter):
    """Writes every generation into the run folder as it goes, which a rerun of the same config resumes.

    Per generated image: ``images/ID_J.png``, ``best/ID_J.png``, one line of ``metrics.jsonl`` and one of
    ``trajectories.jsonl`` (loss and cosine at every guided iteration); per target: ``grids/ID.png`` (the target at
    its generations' height, or a labelled tile for a feature target | the generations with their cosine, enlarged
    for viewing, under the id). Files are named by sample id and written atomically; a batch's metrics lines are
    written after its images and trajectories, so a metrics line means its generation is complete.

    The folder is one run (:class:`~lit_featinv.runs.folder.RunFolder`): generations with a metrics line and their
    images are not generated again, so rerunning the same config resumes a stopped run. SIGTERM and SIGINT stop the
    run between two guided iterations; everything written stays.

    Args:
        output_dir: the run folder; default ``trainer.default_root_dir``.
        overwrite: delete an earlier run's outputs in the folder and start afresh instead of resuming.
    """

    def __init__(self, output_dir: str | None = None, overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output_dir, self.overwrite = output_dir, overwrite
        self.summary: dict | None = None

    def resolve_dir(self, trainer) -> str:
        return self.output_dir or trainer.default_root_dir

    @property
    def dir(self) -> str:
        return str(self.folder.path)

    def setup(self, trainer, pl_module, stage: str) -> None:
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")  # TargetData's batches come whole
        warnings.filterwarnings("ignore", message="Total length of `DataLoader` across ranks is zero")  # all done
        self.folder = RunFolder(self.resolve_dir(trainer))
        if trainer.is_global_zero:
            self.folder.open(overwrite=self.overwrite)  # lock and clean, unless this process did (lit-featinv)
        trainer.strategy.barrier("lit_featinv: run folder ready")
        self.done = self.folder.done()
        self.unreadable: list[str] = []
        gens = getattr(pl_module, "samples_per_target", 1)
        per_id = Counter(sample_id for sample_id, _ in self.done)
        if hasattr(trainer.datamodule, "skip"):
            trainer.datamodule.skip({sample_id for sample_id, n in per_id.items() if n >= gens})

    def on_predict_start(self, trainer, pl_module) -> None:
        """Stop signals wait for the guided loop's next iteration while it runs (rank 0 passes them on to the
        processes its launcher started); the CLI has taken them over already, a Python caller's Trainer has not."""
        launcher = trainer.strategy.launcher
        self.launcher = launcher if trainer.is_global_zero and getattr(launcher, "procs", None) else None
        self.children = list(self.launcher.procs) if self.launcher else []
        self.owns_signals = STOP.install()
        STOP.defer(True, forward=self.pass_on if self.children else None)

    def pass_on(self, signum: int) -> None:
        """Rank 0 passes a stop on to the processes its launcher started, once they are off the list that
        Lightning's child-process observer watches: the observer SIGKILLs this process as soon as one of them ends
        non-zero (each ends with 128 + signal after a stop), before this one has ended the run and said so; the CLI
        waits for them instead (``settle``)."""
        self.launcher.procs.clear()
        for proc in self.children:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.release_signals()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.release_signals()

    def release_signals(self) -> None:
        STOP.defer(False)
        if getattr(self, "owns_signals", False):
            STOP.restore()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        lines, trajectories, grids, unreadable = [], [], {}, []
        for rec in prediction:
            if rec["status"] == "unreadable":
                unreadable.append(f"{rec['source']} ({rec['error']})")
                continue
            if rec["status"] == "ok":  # a grid shows every generation of its target, whenever it was written
                add_to_grid(grids, rec)
            if (rec["id"], rec["sample"]) in self.done:  # written before a stop: the same pixels again
                continue
            line = {"id": rec["id"], "sample": rec["sample"], "seed": rec["seed"], "status": rec["status"]}
            if rec["status"] == "ok":
                stem = f"{rec['id']}_{rec['sample']}"
                line |= {"image": f"images/{stem}.png", "best_image": f"best/{stem}.png"}
                save_png(rec["image"], os.path.join(self.dir, line["image"]))
                save_png(rec["best_image"], os.path.join(self.dir, line["best_image"]))
                trajectories.append({"format": TRAJECTORY_FORMAT, "id": rec["id"], "sample": rec["sample"]}
                                    | rec["trajectory"])
            else:
                line["failed_step"] = rec["failed_step"]
            line["target_source"] = rec["source"]
            if rec["target_image"] is not None:
                line["target_image"] = os.path.abspath(rec["source"])
            lines.append(line | rec["metrics"])
        for sample_id, (tiles, captions) in grids.items():
            save_png(grid(sample_id, tiles, captions), os.path.join(self.dir, "grids", f"{sample_id}.png"))
        for path, rows in ((self.folder.trajectories, trajectories), (self.folder.metrics, lines)):
            with open(path, "a") as f:  # one write per batch: whole lines, also with several ranks
                f.write("".join(json.dumps(row) + "\n" for row in rows))
        self.done.update({(line["id"], line["sample"]): line for line in lines})
        if unreadable:
            warnings.warn(f"data.images: skipped {len(unreadable)} image(s) that could not be decoded: "
                          + ", ".join(unreadable))
            self.unreadable += unreadable

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict" or not hasattr(self, "folder"):
            return
        trainer.strategy.barrier("lit_featinv: all written")
        unreadable = self.unreadable
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self.unreadable)
            unreadable = [name for part in gathered for name in part]
        if trainer.is_global_zero:
            self.summary = self.summarise(unreadable)
            print(self.summary["text"], flush=True)
        self.folder.release()

    def summarise(self, unreadable: list[str]) -> dict:
        rows = list(self.folder.done().values())
        failed, stats = [r for r in rows if not ok(r)], run_stats(rows)
        text = (f"lit_featinv: {stats['generations']} images in {os.path.abspath(self.dir)}/images (best: best/, "
                f"grids: grids/)")
        if stats["generations"]:
            text += f"\nlit_featinv: metrics in {os.path.abspath(self.folder.metrics)}"
            if not math.isnan(stats["mean_cosine"]):  # over the targets that have a direction (not all zeros)
                text += f"; cosine to target: mean {stats['mean_cosine']:.4f}, worst {stats['worst_cosine']:.4f}"
            if not math.isnan(stats["mean_loss"]):  # the objective (model.loss): what a maximisation is about
                text += f"; loss: mean {stats['mean_loss']:.4g}"
        if failed:
            text += (f"\nlit_featinv: {len(failed)} generation(s) became NaN/Inf and were not written (status "
                     f"'nonfinite' in metrics.jsonl): " + ", ".join(f"{r['id']}_{r['sample']}" for r in failed[:10]))
        if unreadable:
            text += f"\nlit_featinv: {len(unreadable)} target image(s) could not be decoded: " + ", ".join(unreadable)
        return {"ok": stats["generations"], "failed": len(failed), "unreadable": unreadable, "text": text}


def add_to_grid(grids: dict, rec: dict) -> None:
    """A generation into its target's grid row: the target drawn at the generations' height (or a labelled tile for a
    feature target), then each generation over its cosine."""
    target, image = rec["target_image"], rec["image"]
    tiles, captions = grids.setdefault(rec["id"], ([f"feature target {rec['id']}" if target is None else
                                                    fit_height(target, image.shape[-2])], ["target"]))
    cosine = rec["metrics"].get("cosine")
    tiles.append(image)
    captions.append("cos –" if cosine is None else f"cos {cosine:.4f}")
