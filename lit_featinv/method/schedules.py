"""Per-step values (the recurrence K, the guidance scale w): one number, one value per scheduler step, or pieces
``{from step index: value}`` that hold until the next piece (``{0: 8, 10: 1, 40: 3}``: K = 8 for steps 0-9, 1 for
10-39, 3 from 40 on)."""
from __future__ import annotations

from ..errors import ConfigError

Schedule = float | list[float] | dict[int, float]


def per_step(value: Schedule, num_steps: int, key: str) -> list[float]:
    """``value`` as one value per step, or a one-line :class:`~lit_featinv.errors.ConfigError` naming ``key``: a list
    of another length than ``num_steps``, pieces whose keys are not step indices in 0..num_steps-1 or that do not
    start at step 0."""
    if isinstance(value, dict):
        pieces = {}
        for start, v in value.items():
            try:
                index = int(start)
            except (TypeError, ValueError):
                raise ConfigError(key, f"{start!r} is not a step index (pieces are {{from step: value}})") from None
            if not 0 <= index < num_steps:
                raise ConfigError(key, f"piece from step {index} is outside steps 0..{num_steps - 1} "
                                       f"(model.num_inference_steps {num_steps})")
            pieces[index] = v
        if 0 not in pieces:
            raise ConfigError(key, f"pieces start at step {min(pieces, default='none')}: give the value from step 0")
        starts = sorted(pieces)
        return [pieces[max(s for s in starts if s <= i)] for i in range(num_steps)]
    if isinstance(value, (list, tuple)):
        if len(value) != num_steps:
            raise ConfigError(key, f"has {len(value)} values for {num_steps} steps (model.num_inference_steps)")
        return list(value)
    return [value] * num_steps
