"""Targets built from other targets' features, in the config (``data.constructed``): interpolations, arithmetic,
folder means (class prototypes) and given directions.

A :class:`Construction` names its targets and the part files they are built from (:meth:`~Construction.items`);
:mod:`lit_featinv.runs.sources` reads the parts, the module measures the image parts with its extractor, and
:meth:`~Construction.build` makes each target vector from the parts' features. Nothing here reads a file or runs a
network: a construction is names and arithmetic on vectors.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ..errors import ConfigError

MAX_ID = 200  # characters: an id becomes a file name (images/ID_J.png)


def part(spec: str, key: str) -> dict:
    """A part file as the config gives it: an image, a feature file [D], or a row of one [N, D] as ``file.pt[3]``."""
    match = re.fullmatch(r"(.+)\[(\d+)\]", str(spec))
    return {"file": match[1], "row": int(match[2]), "key": key} if match else {"file": str(spec), "row": None, "key": key}


def stem(spec: str) -> str:
    """A part's name in ids: the file name without suffix (``probe_row3`` for ``probe.pt[3]``)."""
    p = part(spec, "")
    name = Path(p["file"]).stem or Path(p["file"]).resolve().name
    return name if p["row"] is None else f"{name}_row{p['row']}"


def clean(text: str) -> str:
    """A valid file name without spaces: runs of other characters than letters, digits, ``._+-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "target"


class Construction:
    """Targets built from the features of their parts (image files, whose feature the module's extractor computes as
    for ``data.images`` targets, or vectors of ``.pt``/``.npy`` feature files).

    Args:
        name: the ids' stem instead of the one that says how the targets are built.
    """

    def __init__(self, name: str | None = None):
        self.name = name
        self.key = f"data.constructed ({type(self).__name__})"  # where it is in the config: :meth:`items` sets it

    def items(self, key: str) -> list[dict]:
        """One item per target: ``id``, ``source`` (how it is built), ``parts`` (the files it needs, as
        :func:`part` gives them, with their config keys), ``index`` (for :meth:`build`). ``key``: where the
        construction is in the config (``data.constructed[1]``); its arguments are checked here, naming it."""
        self.key = key
        count, parts = self.count(key), self.parts(key)
        return [{"id": self.label(i, key), "source": self.describe(i), "parts": parts, "index": i} for i in range(count)]

    def build(self, part_features: list[torch.Tensor], index: int) -> torch.Tensor:
        """Target ``index``'s vector [D] from the features [D] of the parts, in the order :meth:`items` gives them."""
        raise NotImplementedError

    # ---- what subclasses say ------------------------------------------------------------------
    def count(self, key: str) -> int:
        """How many targets (the arguments are checked here)."""
        return 1

    def parts(self, key: str) -> list[dict]:
        raise NotImplementedError

    def stem(self) -> str:
        """The ids' stem when no ``name`` is given."""
        raise NotImplementedError

    def suffix(self, index: int) -> str:
        """What tells target ``index`` apart from the others of this construction."""
        return ""

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def label(self, index: int, key: str) -> str:
        sid = clean(self.name if self.name is not None else self.stem()) + self.suffix(index)
        if len(sid) > MAX_ID:
            raise ConfigError(f"{key}.name", f"the id {sid[:40]!r}... is longer than {MAX_ID} characters (it becomes a "
                                             f"file name): give a shorter name")
        return sid


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The norm linearly, (1 - t)|a| + t|b|; the direction along the great circle from a/|a| to b/|b|. Antiparallel
    ends: the circle through a fixed perpendicular (the axis a/|a| is smallest along); a zero end: linear."""
    dtype, a, b = a.dtype, a.double(), b.double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0 or a.numel() == 1:
        return ((1 - t) * a + t * b).to(dtype)
    u, v = a / na, b / nb
    omega = 2 * torch.atan2((u - v).norm(), (u + v).norm())  # the angle, accurate near 0 and pi
    if omega < 1e-7:  # parallel
        direction = u
    elif math.pi - omega < 1e-7:  # antiparallel: every great circle through u and -u is one; take a fixed one
        perpendicular = torch.zeros_like(u)
        perpendicular[u.abs().argmin()] = 1
        perpendicular = perpendicular - (perpendicular @ u) * u
        direction = math.cos(math.pi * t) * u + math.sin(math.pi * t) * perpendicular / perpendicular.norm()
    else:
        direction = (torch.sin((1 - t) * omega) * u + torch.sin(t * omega) * v) / torch.sin(omega)
    return (((1 - t) * na + t * nb) * direction).to(dtype)


class Interpolation(Construction):
    """``points`` targets from the feature A of ``start`` to the feature B of ``end``, at t = 0, 1/(points-1), ..., 1.

    Linear: (1 - t) A + t B. ``spherical`` (slerp): the norm is interpolated linearly, (1 - t)|A| + t|B|, and the
    direction spherically, along the great circle from A/|A| to B/|B|, so every point has a plausible norm where
    the linear midpoint of two distant features is short. t = 0 gives A and t = 1 gives B exactly. Parallel ends
    give their common direction; antiparallel ones have no unique great circle: a fixed perpendicular is taken (the
    axis A/|A| is smallest along); a zero end makes it linear.

    Args:
        start, end: an image or a feature file [D] (a row of [N, D]: ``file.pt[3]``).
        points: targets, both ends included (>= 2).
        spherical: slerp instead of linear interpolation.
        name: ids ``NAME_03of07`` instead of ``lerp_START_to_END_03of07`` (``slerp_...``); point 3 of 7 counts
            from 1 (01 is the start, 07 the end).
    """

    def __init__(self, start: str, end: str, points: int, spherical: bool = False, name: str | None = None):
        super().__init__(name)
        self.start, self.end, self.points, self.spherical = str(start), str(end), points, spherical

    def count(self, key: str) -> int:
        if self.points < 2:
            raise ConfigError(f"{key}.points", f"{self.points} points cannot go from start to end: give 2 or more")
        return self.points

    def parts(self, key: str) -> list[dict]:
        return [part(self.start, f"{key}.start"), part(self.end, f"{key}.end")]

    def kind(self) -> str:
        return "slerp" if self.spherical else "lerp"

    def stem(self) -> str:
        return f"{self.kind()}_{stem(self.start)}_to_{stem(self.end)}"

    def suffix(self, index: int) -> str:
        width = max(2, len(str(self.points)))
        return f"_{index + 1:0{width}d}of{self.points:0{width}d}"

    def t(self, index: int) -> float:
        return index / (self.points - 1)

    def describe(self, index: int) -> str:
        return f"{self.kind()}({self.start}, {self.end}, t={self.t(index):.4g})"

    def build(self, part_features: list[torch.Tensor], index: int) -> torch.Tensor:
        a, b = part_features
        t = self.t(index)
        if index == 0 or index == self.points - 1:
            return (a if index == 0 else b).clone()
        return slerp(a, b, t) if self.spherical else (1 - t) * a + t * b


TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*]))")


def parse_expression(expression: str, key: str) -> list[tuple[float, str]]:
    """``"A - 0.5*B + C"`` -> ``[(1, "A"), (-0.5, "B"), (1, "C")]``: terms joined by + and -, each a name with an
    optional number and ``*`` before it (a leading sign allowed). Anything else is refused, naming ``key``."""
    tokens, pos, text = [], 0, expression.rstrip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            at = len(text) - len(text[pos:].lstrip())
            raise ConfigError(key, f"cannot parse {expression!r}: unexpected {text[at]!r} at character {at + 1} "
                                   f"(terms are NAME or NUMBER*NAME, joined by + and -)")
        kind = match.lastgroup
        tokens.append((kind, match[kind]))
        pos = match.end()

    def fail(i: int, wanted: str):
        found = repr(tokens[i][1]) if i < len(tokens) else "the end"
        raise ConfigError(key, f"cannot parse {expression!r}: expected {wanted} but found {found} "
                               f"(terms are NAME or NUMBER*NAME, joined by + and -)")

    terms, i = [], 0
    while True:
        sign = 1.0
        if i < len(tokens) and tokens[i][0] == "op" and tokens[i][1] in "+-":
            sign = -1.0 if tokens[i][1] == "-" else 1.0
            i += 1
        elif terms:
            fail(i, "+ or -")
        coefficient = 1.0
        if i < len(tokens) and tokens[i][0] == "number":
            coefficient = float(tokens[i][1])
            if i + 1 >= len(tokens) or tokens[i + 1] != ("op", "*"):
                fail(i + 1, "* after a number")
            i += 2
        if i >= len(tokens) or tokens[i][0] != "name":
            fail(i, "a term name")
        terms.append((sign * coefficient, tokens[i][1]))
        i += 1
        if i == len(tokens):
            return terms


class Arithmetic(Construction):
    """One target: a weighted sum of term features, e.g. ``A - B + C`` (the analogy "A is to B as C is to ?") or
    ``0.5*A + 0.5*B``. The expression joins term names with + and -, each with an optional ``NUMBER*`` before it; it
    is parsed, never evaluated as code. A name used twice adds up its coefficients.

    Args:
        expression: over the names of ``terms``; every term is used.
        terms: name -> an image or a feature file [D] (a row of [N, D]: ``file.pt[3]``).
        name: the id instead of ``arith_`` and the expression with the terms' file names (``0.5x`` for ``0.5*``).
    """

    def __init__(self, expression: str, terms: dict[str, str], name: str | None = None):
        super().__init__(name)
        self.expression, self.terms = expression, {str(k): str(v) for k, v in dict(terms).items()}

    def coefficients(self, key: str) -> dict[str, float]:
        """Name -> coefficient, in the order the names first occur (checked against ``terms``)."""
        written = parse_expression(self.expression, f"{key}.expression")
        names = [n for _, n in written]
        for name in names:
            if name not in self.terms:
                raise ConfigError(f"{key}.terms.{name}", f"the expression {self.expression!r} names {name!r}, but "
                                                         f"terms gives only {sorted(self.terms)}")
        for name in self.terms:
            if name not in names:
                raise ConfigError(f"{key}.terms.{name}", f"not used in the expression {self.expression!r}")
        combined = {}
        for c, name in written:
            combined[name] = combined.get(name, 0.0) + c
        return combined

    def parts(self, key: str) -> list[dict]:
        return [part(self.terms[name], f"{key}.terms.{name}") for name in self.coefficients(key)]

    def stem(self) -> str:
        text = ""
        for c, name in parse_expression(self.expression, f"{self.key}.expression"):
            text += ("-" if c < 0 else "+" if text else "") + (f"{abs(c):g}x" if abs(c) != 1 else "")
            text += stem(self.terms[name])
        return f"arith_{text}"

    def describe(self, index: int) -> str:
        return f"{self.expression} with " + ", ".join(f"{n}={p}" for n, p in self.terms.items())

    def build(self, part_features: list[torch.Tensor], index: int) -> torch.Tensor:
        total = None
        for c, f in zip(self.coefficients(self.key).values(), part_features):
            total = c * f if total is None else total + c * f
        return total


class FolderMean(Construction):
    """One target: the mean feature of every readable image under ``folder`` (recursive, sorted, read as
    ``data.images`` reads a folder): a class prototype from a folder of one class.

    The folder's images are read into memory together when the target is loaded (a few thousand small ones).

    Args:
        folder: a folder of images.
        name: the id instead of ``mean_`` and the folder's name.
    """

    def __init__(self, folder: str, name: str | None = None):
        super().__init__(name)
        self.folder = str(folder)

    def parts(self, key: str) -> list[dict]:
        return [{"file": self.folder, "row": None, "key": f"{key}.folder", "folder": True}]

    def stem(self) -> str:
        return f"mean_{Path(self.folder).name or Path(self.folder).resolve().name}"

    def describe(self, index: int) -> str:
        return f"mean of the images in {self.folder}"

    def build(self, part_features: list[torch.Tensor], index: int) -> torch.Tensor:
        return torch.stack(part_features).mean(0)


class Direction(Construction):
    """One target: a given vector, e.g. a linear probe's weights for one class (a row of its [C, D] matrix), scaled
    to ``norm`` (the norm of the features it should look like: a probe's weights are rarely on their scale). It is a
    feature file's vector: no image and no extractor is involved.

    Args:
        vector: a ``.pt``/``.npy`` file of shape [D] or [C, D].
        row: the row of a [C, D] file (needed when C > 1).
        norm: the target's norm (> 0); null keeps the vector's own.
        name: the id instead of ``direction_FILE[_rowR][_normN]``.
    """

    def __init__(self, vector: str, row: int | None = None, norm: float | None = None, name: str | None = None):
        super().__init__(name)
        self.vector, self.row, self.norm = str(vector), row, norm

    def count(self, key: str) -> int:
        if self.norm is not None and not (math.isfinite(self.norm) and self.norm > 0):
            raise ConfigError(f"{key}.norm", f"{self.norm} is not a norm (> 0; null keeps the vector's own)")
        if self.row is not None and self.row < 0:
            raise ConfigError(f"{key}.row", f"{self.row} is not a row (>= 0)")
        return 1

    def parts(self, key: str) -> list[dict]:
        return [{"file": self.vector, "row": self.row, "key": f"{key}.vector", "row_key": f"{key}.row",
                 "features_only": True}]

    def stem(self) -> str:
        text = f"direction_{Path(self.vector).stem}"
        text += f"_row{self.row}" if self.row is not None else ""
        return text + (f"_norm{self.norm:g}" if self.norm is not None else "")

    def describe(self, index: int) -> str:
        source = self.vector if self.row is None else f"{self.vector}[{self.row}]"
        return source + (f" scaled to norm {self.norm:g}" if self.norm is not None else "")

    def build(self, part_features: list[torch.Tensor], index: int) -> torch.Tensor:
        (v,) = part_features
        if self.norm is None:
            return v.clone()
        length = v.double().norm()
        if length == 0:
            raise ConfigError(f"{self.key}.vector", f"{self.describe(index)}: the vector is zero, it has no "
                                                    f"direction to scale to norm {self.norm:g}")
        return (v.double() * (self.norm / length)).to(v.dtype)
