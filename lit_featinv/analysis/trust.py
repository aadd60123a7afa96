"""Trust signals as a report reads them: the prior-score reference (prior scores of real images, written by
``benchmarks/prior_score.py``, or a run folder's), where a generation's ``prior_score`` falls in it, and the flags: a
score above the reference's 95th percentile (atypical of the prior) and checks that fail (the feature is matched,
other networks disagree)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..runs.folder import ok
from .reading import Run, load_run

REFERENCE_FORMAT = "lit_featinv.prior_score_reference/1"
PERCENTILE = 95  # a generation above this percentile of the reference is flagged


@dataclass
class Reference:
    """Prior scores of reference images (real ones: lower is more typical), where they come from, and the prior and
    score settings they were measured with (None: unknown)."""

    scores: np.ndarray
    source: str
    prior: dict | None = None
    settings: dict | None = None

    @property
    def threshold(self) -> float:
        return float(np.percentile(self.scores, PERCENTILE))

    def rank(self, score: float) -> float:
        """The percentage of reference scores at or below ``score``."""
        return 100.0 * float(np.mean(self.scores <= score))


def model_part(config: dict, name: str) -> dict | None:
    """A run config's ``model.init_args.NAME`` (a ``{class_path, init_args}`` spec), or None."""
    return ((config.get("model") or {}).get("init_args") or {}).get(name)


def load_reference(path: str | Path) -> Reference:
    """A reference from a JSON file (``{"format": ..., "scores": [...], "prior": spec, "prior_score": spec}``, or a
    plain list of numbers) or a run folder (its generations' ``prior_score``); a :class:`ConfigError` under
    ``report.reference`` when there is none to read."""
    path = Path(path)
    if path.is_dir():
        run = load_run(path, "reference", key="report.reference")
        scores = [line.get("prior_score") for line in run.generations.values() if ok(line)]
        prior, settings = model_part(run.config, "prior"), model_part(run.config, "prior_score")
    elif path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise ConfigError("report.reference", f"{path} is not JSON: {err}") from None
        data = {"scores": data} if isinstance(data, list) else data
        if not isinstance(data, dict) or data.get("format", REFERENCE_FORMAT) != REFERENCE_FORMAT:
            raise ConfigError("report.reference", f"{path}: not a prior-score reference ({REFERENCE_FORMAT} or a list "
                                                  f"of numbers)")
        scores, prior, settings = data.get("scores") or [], data.get("prior"), data.get("prior_score")
    else:
        raise ConfigError("report.reference", f"{str(path)!r} does not exist")
    values = np.asarray([s for s in scores if isinstance(s, (int, float))], dtype=float)
    if not len(values):
        raise ConfigError("report.reference", f"{path} holds no prior scores")
    return Reference(values, str(path), prior, settings)


def describe(spec: dict | None) -> str:
    args = (spec or {}).get("init_args") or {}
    name = str((spec or {}).get("class_path", "?")).rsplit(".", 1)[-1]
    return f"{name}({Path(str(args['pretrained'])).name})" if args.get("pretrained") else name


def comparable(reference: Reference, run: Run) -> str | None:
    """Why ``run``'s prior scores cannot be read against ``reference`` (another prior, other score settings, none
    recorded), or None when they can (what the reference does not say is taken to fit)."""
    prior, settings = model_part(run.config, "prior"), model_part(run.config, "prior_score")
    if not any(line.get("prior_score") is not None for line in run.generations.values()):
        return f"run {run.label!r} has no prior scores (prior_score: null); nothing is flagged against the reference"
    if reference.prior is not None and prior is not None and describe(reference.prior) != describe(prior):
        return (f"run {run.label!r} has the prior {describe(prior)}, the reference {reference.source} "
                f"{describe(reference.prior)}: its prior scores are not compared with the reference")
    if reference.settings is not None and settings is not None and \
            (reference.settings.get("init_args") or {}) != (settings.get("init_args") or {}):
        return (f"run {run.label!r} scores with {settings.get('init_args')}, the reference {reference.source} with "
                f"{reference.settings.get('init_args')}: its prior scores are not compared with the reference")
    return None


def atypical(line: dict, reference: Reference | None) -> bool:
    """Whether a generation's prior score is above the reference's 95th percentile."""
    score = line.get("prior_score")
    return reference is not None and score is not None and score > reference.threshold


def disagreeing(line: dict, min_cosine: float | None = None) -> list[str]:
    """The checks a generation fails: a classifier whose top-1 class differs from the target's, or (with
    ``min_cosine``) a cosine to the target's features below it."""
    failed = []
    for name, check in (line.get("checks") or {}).items():
        low = min_cosine is not None and check.get("cosine") is not None and check["cosine"] < min_cosine
        if check.get("agrees") is False or low:
            failed.append(name)
    return failed
