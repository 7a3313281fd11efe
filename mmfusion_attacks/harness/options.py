"""Checks for the benchmarks' command-line options, so a bad option is reported before any data is
generated or any model loads or trains (which takes from seconds to minutes), with the option named.

Single values are checked by argparse ``type=`` functions (:func:`count`, :func:`number`), which
argparse reports as ``argument --batch-size: must be an int >= 1, got 0``; checks that need several
options or the file system (:func:`device_problem`, :func:`out_dir_problem`, :func:`duplicates`) return
a message for ``parser.error`` (exit status 2), or None.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["count", "number", "device_problem", "out_dir_problem", "duplicates", "resolve_device", "checked_args"]


def count(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an int in ``[minimum, maximum]``."""
    span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int {span}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an int {span}, got {value}")
        return value

    parse.__name__ = f"int {span}"
    return parse


def number(low: float, high: float, *, low_open: bool = True, high_open: bool = False, unit: str = "") -> Callable[[str], float]:
    """argparse type: a finite float in the interval from ``low`` to ``high`` (open or closed ends)."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}" + (f" ({unit})" if unit else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text!r}") from None
        inside = math.isfinite(value) and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text}")
        return value

    parse.__name__ = f"number in {span}"
    return parse


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``; other names unchanged."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def device_problem(name: str, option: str = "--device", allow_auto: bool = False) -> str | None:
    """Why ``name`` is not a device torch can use here (cpu, cuda, cuda:N, mps[, auto]), or None."""
    import torch

    if allow_auto and name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return f"argument {option}: {name!r} is not a device name (cpu, cuda, cuda:N, mps" + (", auto)" if allow_auto else ")")
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"argument {option}: {name!r} asked for, but torch sees no CUDA device"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"argument {option}: {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else f"argument {option}: 'mps' asked for, but it is not available"
    return f"argument {option}: device type {device.type!r} is not supported here (cpu, cuda, cuda:N, mps)"


def out_dir_problem(path: str | Path, option: str = "--out") -> str | None:
    """Why the results folder ``path`` cannot be created or written, or None (nothing is created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"argument {option}: {path} exists and is not a folder"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"argument {option}: {path} cannot be created: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"argument {option}: {path} cannot be written ({existing} is not writable)"
    return None


def duplicates(values: Iterable, option: str, key: Callable = lambda v: v, what: str = "value") -> str | None:
    """A message naming the values of ``option`` that are the same ``what`` (equal ``key``), or None:
    a repeated value would be run, and counted, twice (or overwrite the other's row)."""
    values = list(values)
    seen = Counter(key(v) for v in values)
    twice = [k for k, n in seen.items() if n > 1]
    if not twice:
        return None
    shown = "; ".join(f"{' and '.join(str(v) for v in values if key(v) == k)} are the same {what} ({k})" for k in twice)
    return f"argument {option}: {shown}; give each once"


def checked_args(
    parser: argparse.ArgumentParser, argv: Iterable[str] | None, problems: Callable[[argparse.Namespace], list[str]]
) -> argparse.Namespace:
    """Parse ``argv``, report every problem ``problems(args)`` finds through ``parser.error`` (exit 2, before
    any work), then resolve ``--device auto`` and seed torch with ``--seed``: the start of every preset's main."""
    import torch

    args = parser.parse_args(None if argv is None else list(argv))
    found = problems(args)
    if found:
        parser.error("; ".join(found) if len(found) == 1 else "\n  " + "\n  ".join(found))
    args.device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    return args

