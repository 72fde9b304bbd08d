"""Strict JSON: what ``json.dumps(..., allow_nan=False)`` accepts, so any parser can read it.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON (JavaScript's
``JSON.parse``, ``jq`` and most other readers reject the file). :func:`to_strict` replaces every
non-finite float with ``None`` (``null``) and reports where it did, so that the caller can say
why a value is missing; :func:`dumps_strict` refuses anything that would still not be JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np


def to_strict(obj: Any, replaced: list[str] | None = None, _path: str = "") -> Any:
    """A copy of ``obj`` made of JSON types only, with non-finite floats as ``None``.

    Args:
        obj: dicts, lists, tuples, numbers (Python or numpy), numpy arrays, strings, paths,
            booleans and None, nested.
        replaced: when given, the dotted path (``metrics.image_auroc``, ``images.3.score``) of
            every NaN / inf that became ``None`` is appended to it.

    Returns:
        The converted object (dict keys as strings, tuples and arrays as lists, numpy scalars
        as Python numbers, paths as strings).

    Raises:
        TypeError: for a value of any other type.
    """
    if isinstance(obj, dict):
        return {str(k): to_strict(v, replaced, f"{_path}.{k}" if _path else str(k))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        items = obj.tolist() if isinstance(obj, np.ndarray) else obj
        return [to_strict(v, replaced, f"{_path}.{i}" if _path else str(i))
                for i, v in enumerate(items)]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        if math.isfinite(f):
            return f
        if replaced is not None:
            replaced.append(_path)
        return None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__} at {_path or 'top level'}")


def dumps_strict(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (NaN / inf written as ``null``), ending with a newline."""
    return json.dumps(to_strict(obj), indent=indent, allow_nan=False, ensure_ascii=False) + "\n"
