"""Objectives of generated features f(x) [B, D] given targets f* [B, D], one value per sample, minimised by the
guidance: distances to the target (matching) and negated activations or projections (maximisation).

A maximisation objective's loss is unbounded below, and that is fine: the guidance rescales each sample's gradient to
the norm of the predicted noise and clips it element-wise around its own mean and std (``lit_featinv.method.guidance``), so
only the gradient's direction reaches the sampler, never the loss's size; the best image is the one with the smallest
loss, i.e. the largest activation or projection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


class FeatureLoss:
    """Base class: ``loss(features, target) -> [B]``, minimised by the guidance."""

    def __call__(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each image's loss on its own, whatever else is in the batch: what picks a generation's best image. The loss
        itself, but for terms between the rows of a batch (:class:`Diverse`'s)."""
        return self(features, target)


class SquaredL2(FeatureLoss):
    """||f(x) - f*||^2 on raw features (the paper's loss)."""

    def __call__(self, features, target):
        return (features.float() - target.float()).pow(2).sum(1)


class CosineDistance(FeatureLoss):
    """1 - cos(f(x), f*): matches the direction only."""

    def __call__(self, features, target):
        return 1 - F.cosine_similarity(features.float(), target.float(), dim=1)


class Activation(FeatureLoss):
    """-f(x)[c]: maximise one channel's (or neuron's) activation, the feature's entry ``c``.

    The feature is the extractor's: e.g. ``TimmExtractor(layer=3, pool="avg")`` gives each channel's mean activation
    of block 3, and ``select: [c0, c1, ...]`` keeps only some of them.

    Args:
        channel: the entry ``c`` of the feature, the same for every target (the target's values are not used, only
            its length is checked against the feature's). null: each target says its own entry: the targets must be
            one-hot (a single 1, zeros elsewhere; e.g. the rows of an identity matrix as a ``data.features`` file), and
            the loss is -<f(x), f*> = -f(x)[c] for the target's c, so one run visualises several channels, one per
            target (with ``select``: the ``i``-th selected channel for the one-hot row ``i``).

    The loss is unbounded below; the guidance uses only its gradient's direction (see the module docstring). A
    channel that is 0 after a ReLU for a generation's current estimate has no gradient: that generation goes
    unguided until the channel turns on (a layer before the ReLU, a named submodule such as ``layer2.0.conv2``, has
    none stuck at 0).
    """

    def __init__(self, channel: int | None = None):
        if channel is not None and channel < 0:
            raise ConfigError("model.loss.channel", f"{channel} is not an index of the feature (>= 0)")
        self.channel = channel

    def __call__(self, features, target):
        features, target = features.float(), target.float()
        size = features.shape[1]
        if self.channel is not None:
            if self.channel >= size:
                raise ConfigError("model.loss.channel", f"{self.channel} is out of range of the extractor's "
                                                        f"{size}-value feature (model.extractor: layer, select)")
            return -features[:, self.channel]
        if target.shape != features.shape:
            raise ConfigError("model.loss.channel", f"null takes the channel from one-hot targets of the feature's "
                                                    f"length {size}, but the targets have shape {list(target.shape)}")
        nonzero = (target != 0).sum(1)
        bad = (nonzero != 1) | (target.sum(1) != 1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ConfigError("model.loss.channel", f"null takes the channel from one-hot targets (a single 1, zeros "
                                                    f"elsewhere), but a target has {int(nonzero[row])} nonzero "
                                                    f"value(s) summing to {float(target[row].sum()):g}; give "
                                                    f"one-hot rows in data.features or set a channel")
        return -(features * target).sum(1)


class Projection(FeatureLoss):
    """-<f(x), f* / ||f*||>: maximise the projection of the feature on the target's direction (e.g. a linear probe's
    or classifier's weights for one class, as a ``data.features`` target; a target image's feature gives "more of
    what this image has").

    The loss is unbounded below; the guidance uses only its gradient's direction (see the module docstring), so the
    target's length changes the reported loss only, not the run.
    """

    def __call__(self, features, target):
        features, target = features.float(), target.float()
        norm = target.norm(dim=1)
        if (norm == 0).any():
            raise ConfigError("data", "a target feature is all zeros: it gives lit_featinv.Projection (model.loss) "
                                      "no direction")
        return -(features * target).sum(1) / norm


class Diverse(FeatureLoss):
    """A wrapped loss minus a diversity term among the generations of one target:
    loss_i = loss(f_i, f*_i) - weight * mean over j of (1 - cos(f_i, f_j)), over the other rows j of the batch with the
    same target vector (a target's ``model.samples_per_target`` generations are always in one batch); a row alone
    with its target gets no term.

    The distance is the cosine distance between the generations' features: free of the feature's scale (a layer whose
    activations are 10x larger is pushed apart alike), bounded (0..2, it cannot outgrow the objective), and it needs
    nothing from the target, which for :class:`Activation` and :class:`Projection` is no feature (a distance relative
    to ||f*|| would be meaningless there). ``weight`` is in the units of the wrapped loss: for
    :class:`CosineDistance` the two terms compare directly; for :class:`SquaredL2`, :class:`Activation` or
    :class:`Projection` the balance depends on the feature's scale, so set it by eye. Only the diversity in the
    extractor's feature is pushed: with ``select``, in the selected entries only (to visualise one channel diversely,
    leave ``select`` out and use ``Activation(channel=c)`` on the whole pooled layer).

    The other generations f_j are held fixed (detached): each generation's gradient is that of its own loss_i, as
    for every other loss, not the pair term twice. The guidance rescales and clips each sample's gradient, so only
    the direction of the sum matters. :meth:`image_loss`, what should pick a generation's best image, is the wrapped
    loss alone: the term depends on the other generations' current estimates, not on the image.

    Args:
        loss: the objective, any :class:`FeatureLoss`.
        weight: the diversity weight (>= 0; 0: the wrapped loss exactly).
    """

    def __init__(self, loss: FeatureLoss, weight: float = 0.1):
        if not weight >= 0 or weight == float("inf"):
            raise ConfigError("model.loss.weight", f"{weight} is not a finite number >= 0")
        self.loss, self.weight = loss, weight

    def __call__(self, features, target):
        value = self.loss(features, target)
        if self.weight == 0:
            return value
        return value - self.weight * self.diversity(features, target)

    def image_loss(self, features, target):
        return self.loss.image_loss(features, target)

    @staticmethod
    def diversity(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per row, the mean cosine distance of its feature to those (detached) of the other rows with its target."""
        groups = torch.unique(target.float(), dim=0, return_inverse=True)[1]
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=groups.device)
        unit = F.normalize(features.float(), dim=1)
        distance = 1 - unit @ unit.detach().T
        return (distance * same).sum(1) / same.sum(1).clamp_min(1)

