"""Run folders as a report reads them: each run's metrics lines, config and trajectories, its generations' images,
and the extractors a report measures them with."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
import yaml

from ..config import instantiate, load
from ..errors import ConfigError, config_error, parse_error
from ..method.records import TRAJECTORY_FORMAT
from ..models.extractors import FeatureExtractor
from ..runs.folder import CONFIG, METRICS, TRAJECTORIES, ok, read_jsonl
from ..runs.images import load_image


@dataclass
class Run:
    """One run folder as a report reads it; ``notes``: what could not be read, one line each."""

    path: Path
    label: str
    config: dict
    generations: dict[tuple[str, int], dict]  # (id, sample) -> its last metrics line
    trajectories: dict[tuple[str, int], dict]  # (id, sample) -> its last trajectory line; empty: no curves
    notes: list[str] = field(default_factory=list)

    @cached_property
    def by_target(self) -> dict[str, list[dict]]:
        """Target id -> the metrics lines of its generations, by generation index."""
        out = {}
        for key in sorted(self.generations):
            out.setdefault(key[0], []).append(self.generations[key])
        return out

    def targets(self) -> list[str]:
        return sorted(self.by_target)

    def lines(self, target: str) -> list[dict]:
        return self.by_target.get(target, [])


def last_per_generation(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """(id, sample) -> the last line for it (a resumed run may have written a generation twice)."""
    return {(str(row["id"]), int(row.get("sample", 0))): row for row in rows if "id" in row}


def read_trajectories(path: Path) -> tuple[dict[tuple[str, int], dict], list[str]]:
    """A run's ``trajectories.jsonl``; none (and a note) when a line is of another format version."""
    if not path.is_file():
        return {}, []
    rows, notes = read_jsonl(path)
    other = {str(row.get("format")) for row in rows} - {TRAJECTORY_FORMAT}
    if other:
        return {}, notes + [f"{path}: format {sorted(other)[0]!r}, not {TRAJECTORY_FORMAT!r} (another version); "
                            f"its curves are left out"]
    return last_per_generation(rows), notes


def load_run(path: str | Path, label: str, key: str = "report.runs", needs_config: bool = True) -> Run:
    """Read a run folder (``config.yaml``, ``metrics.jsonl``, ``trajectories.jsonl``); a folder that does not exist or
    has no metrics file is a :class:`ConfigError` under ``key``; a missing config is noted if ``needs_config``."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(key, f"{str(path)!r} does not exist or is not a folder; run {label!r} is left out")
    if not (path / METRICS).is_file():
        raise ConfigError(key, f"{path / METRICS} does not exist; run {label!r} is left out")
    rows, notes = read_jsonl(path / METRICS)
    trajectories, more = read_trajectories(path / TRAJECTORIES)
    config = yaml.safe_load((path / CONFIG).read_text()) if (path / CONFIG).is_file() else None
    if not isinstance(config, dict) and needs_config:
        notes.append(f"{path / CONFIG} is missing or empty; run {label!r} is shown without its config")
    return Run(path, label, config or {}, last_per_generation(rows), trajectories, notes + more)


def load_generations(run: Run, lines: list[dict]) -> list[torch.Tensor | None]:
    """The images [C, H, W] in [0, 1] of metrics lines; None for a failed generation or a missing file (noted)."""
    images = []
    for line in lines:
        file = run.path / line["image"] if ok(line) and line.get("image") else None
        if file is not None and not file.is_file():
            run.notes.append(f"{file} is missing (run {run.label!r}, target {line['id']!r})")
        images.append(load_image(str(file)) if file is not None and file.is_file() else None)
    return images


def load_extractor(path: str) -> tuple[str, torch.nn.Module]:
    """A feature extractor from a YAML file ``{class_path: ..., init_args: {...}}``, or a run's or preset's config
    (its ``model.init_args.extractor``: e.g. ``RUN_DIR/config.yaml``), and a short name for it (the model's name, its
    layer)."""
    if not Path(path).is_file():
        raise ConfigError("report.extractor", f"{path!r} does not exist")
    try:
        spec = load(path, "report.extractor")  # its paths relative to the file
        if isinstance(spec, dict) and "model" in spec:  # a run config: its extractor
            spec = ((spec["model"] or {}).get("init_args") or {}).get("extractor")
        extractor = instantiate(spec, FeatureExtractor)
    except argparse.ArgumentError as err:
        raise ConfigError("report.extractor", f"{path}: {parse_error(err)}") from None
    except Exception as err:
        if config_error(err) is None:
            raise
        raise ConfigError("report.extractor", f"{path}: {config_error(err)}") from err
    args = (spec.get("init_args") or {}) if isinstance(spec, dict) else {}
    name = Path(str(args.get("model_name") or type(extractor).__name__)).name
    return name + (f"[{args['layer']}]" if args.get("layer") is not None else ""), extractor.eval()


def short_class(spec: dict | None) -> str:
    return str((spec or {}).get("class_path", "?")).rsplit(".", 1)[-1]


def config_summary(config: dict) -> list[str]:
    """A run config in a few lines: prior, extractor, loss, guidance, schedule, generations and seed."""
    model = (config.get("model") or {}).get("init_args") or {}
    if not model:
        return ["(no config)"]

    def part(name: str, *keys: str) -> str:
        args = (model.get(name) or {}).get("init_args") or {}
        return " ".join([short_class(model.get(name))] + [f"{k}={args[k]}" for k in keys if args.get(k) is not None])

    steps = f"{model.get('num_inference_steps')} steps x {model.get('recurrence', 1)}"
    if model.get("early_steps"):
        steps += f" (first {model['early_steps']} x {model.get('early_recurrence')})"
    return [f"prior: {part('prior', 'pretrained')}", f"extractor: {part('extractor', 'model_name', 'layer')}",
            f"loss: {part('loss')}", f"guidance: {part('guidance', 'scale')}", steps,
            f"{model.get('samples_per_target', 1)} per target, seed {model.get('seed')}"]


def best_iteration(trajectory: dict, best_step: int | None) -> int | None:
    """Index of the guided iteration where the best image was found: the smallest loss at ``best_step``."""
    at = [i for i, step in enumerate(trajectory["step"]) if step == best_step]
    return min(at, key=lambda i: trajectory["loss"][i]) if at else None
