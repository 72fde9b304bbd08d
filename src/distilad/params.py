"""Declared arguments: beside its ``defaults`` every method states the type and range of each one.

A declaration is a small object (``Int(min=1)``, ``Float(0, 1, open_low=True, open_high=True)``,
``OneOf("max", "mean")``, ``Seq(Int(min=1), 3)``, ``Path(kind="file")``, ...) that either returns
the value normalised (floats as float, sequences as tuples) or says what it accepts.
:func:`check_params` applies them all and raises one line naming the argument, the value and
what is accepted::

    rd: lr must be a number > 0, got 'abc'

Nothing is converted from text: ``"3"`` is not an integer (the CLI's ``--set`` parses JSON).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

from distilad.errors import DistiladError


class Refused(Exception):
    """Raised by a declaration (also a method's own :class:`Param` subclass) when a value does not
    fit; carries an optional reason.

    ``well_formed=True``: the value has the right form but cannot be used here (e.g. a device
    that this machine lacks); the message then gives the reason only."""

    def __init__(self, reason: str = "", well_formed: bool = False):
        super().__init__(reason)
        self.well_formed = well_formed


class Param:
    """Base class: ``check(value)`` returns the normalised value or raises ``Refused``."""

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Int(Param):
    """An integer (not a bool, not a float such as 2.0) in ``[min, max]``."""

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"an integer in {self.min}..{self.max}"
        if self.min is not None:
            return f"an integer >= {self.min}"
        if self.max is not None:
            return f"an integer <= {self.max}"
        return "an integer"

    def check(self, value: Any) -> int:
        if not _is_int(value):
            raise Refused
        v = int(value)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise Refused
        return v


class Float(Param):
    """A finite real number (ints accepted) between ``low`` and ``high``, each bound open or
    closed."""

    def __init__(self, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"a number {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"a number {'<' if self.open_high else '<='} {self.high:g}"
        return "a finite number"

    def check(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise Refused
        v = float(value)
        if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
            raise Refused
        if self.high is not None and (v > self.high or (self.open_high and v == self.high)):
            raise Refused
        return v


class Bool(Param):
    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Refused
        return value


class OneOf(Param):
    """One of fixed values; a value matches a choice of the same kind (``True`` is not ``1``)."""

    def __init__(self, *choices: Any):
        self.choices = choices

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def check(self, value: Any) -> Any:
        for c in self.choices:
            same_kind = (type(value) is type(c)) or (_is_int(value) and _is_int(c))
            if same_kind and value == c:
                return c
        raise Refused


class AutoOr(Param):
    """``"auto"`` (the value is chosen when it is needed, e.g. measured) or a value of ``inner``."""

    def __init__(self, inner: Param):
        self.inner = inner

    def describe(self) -> str:
        return f"'auto' or {self.inner.describe()}"

    def check(self, value: Any) -> Any:
        if isinstance(value, str) and value == "auto":
            return value
        return self.inner.check(value)


class Text(Param):
    """A non-empty string."""

    def describe(self) -> str:
        return "a non-empty string"

    def check(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Refused
        return value


class Seq(Param):
    """A list or tuple of exactly ``n`` values, each checked by ``item``; returned as a tuple."""

    def __init__(self, item: Param, n: int):
        self.item, self.n = item, n

    def describe(self) -> str:
        return f"a list of {self.n} values, each {self.item.describe()}"

    def check(self, value: Any) -> tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise Refused
        if len(value) != self.n:
            raise Refused
        return tuple(self.item.check(v) for v in value)


class Path(Param):
    """``None``, one of ``special`` strings, or a path (str / os.PathLike), stored as str.

    ``kind="file"``: must be an existing file (when files are checked); ``kind="folder"``: may
    be missing (it is created when written) but must not be a file.
    """

    def __init__(self, kind: str, special: tuple[str, ...] = (), optional: bool = True):
        self.kind, self.special, self.optional = kind, special, optional

    def describe(self) -> str:
        parts = ["None"] if self.optional else []
        parts += [repr(s) for s in self.special]
        parts.append("a path to an existing file" if self.kind == "file" else "a folder path")
        return " or ".join(parts)

    def check(self, value: Any, check_files: bool = True) -> str | None:
        if value is None and self.optional:
            return None
        if isinstance(value, str) and value in self.special:
            return value
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise Refused
        text = os.fspath(value)
        if check_files and self.kind == "file" and not os.path.isfile(text):
            raise Refused("no such file" if not os.path.exists(text) else "not a file")
        if check_files and self.kind == "folder" and os.path.exists(text) \
                and not os.path.isdir(text):
            raise Refused("it exists and is not a folder")
        return text


class ImageSize(Param):
    """An integer size the network can take: ``>= min`` and a multiple of ``step`` (or, with
    ``power_of_two``, a power of two); refused values get the nearest valid sizes and ``why``."""

    def __init__(self, min: int, step: int = 1, power_of_two: bool = False, why: str = ""):
        self.min, self.step, self.power_of_two, self.why = min, step, power_of_two, why

    def describe(self) -> str:
        if self.power_of_two:
            return f"a power of two >= {self.min}"
        return f"a multiple of {self.step}, at least {self.min}"

    def valid(self, v: int) -> bool:
        if v < self.min:
            return False
        if self.power_of_two:
            return v & (v - 1) == 0
        return v % self.step == 0

    def nearest(self, v: int) -> list[int]:
        """The valid sizes just below and above ``v`` (one when ``v`` is below the minimum)."""
        if v <= self.min:
            return [self.min]
        if self.power_of_two:
            lo = 1 << (int(v).bit_length() - 1)
            return [s for s in (lo, lo * 2) if s >= self.min]
        lo = v // self.step * self.step
        return [s for s in (lo, lo + self.step) if s >= self.min]

    def check(self, value: Any) -> int:
        if not _is_int(value):
            raise Refused
        v = int(value)
        if not self.valid(v):
            near = " or ".join(str(s) for s in self.nearest(v))
            why = f" ({self.why})" if self.why else ""
            raise Refused(f"nearest valid: {near}{why}")
        return v


class Device(Param):
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``, and available on this machine."""

    def describe(self) -> str:
        return "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"

    def check(self, value: Any) -> str:
        import torch

        if not isinstance(value, str):
            raise Refused
        text = value.strip().lower()
        if text in ("auto", "cpu"):
            return text
        kind, _, index = text.partition(":")
        if kind == "cuda" and (index == "" or index.isdigit()):
            if not torch.cuda.is_available():
                raise Refused("CUDA is not available here (no GPU, or torch built without CUDA); "
                               "use 'cpu' or 'auto'", well_formed=True)
            if index and int(index) >= torch.cuda.device_count():
                raise Refused(f"this machine has {torch.cuda.device_count()} CUDA device(s)",
                               well_formed=True)
            return text
        if text == "mps":
            mps = getattr(torch.backends, "mps", None)
            if not (mps and mps.is_available()):
                raise Refused("Apple MPS is not available here; use 'cpu' or 'auto'",
                               well_formed=True)
            return text
        raise Refused


def check_params(method: str, specs: Mapping[str, Param], params: Mapping[str, Any],
                 check_files: bool = True) -> dict[str, Any]:
    """Every value of ``params`` checked by its declaration in ``specs``; normalised copies.

    Raises DistiladError ``"<method>: <name> must be <what>, got <value>[; <reason>]"`` for the
    first value that does not fit. ``check_files=False`` skips existence checks of paths (used
    when loading a model written elsewhere, whose weights file is not needed any more).
    """
    out: dict[str, Any] = {}
    for name, value in params.items():
        spec = specs[name]
        try:
            if isinstance(spec, Path):
                out[name] = spec.check(value, check_files=check_files)
            else:
                out[name] = spec.check(value)
        except Refused as e:
            if e.well_formed:
                raise DistiladError(f"{method}: {name}={_show(value)} cannot be used: {e}") from None
            reason = f"; {e}" if str(e) else ""
            raise DistiladError(f"{method}: {name} must be {spec.describe()}, got "
                                f"{_show(value)}{reason}") from None
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
