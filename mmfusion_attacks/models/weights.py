"""Loading checkpoints into registered models: strict, ``weights_only``, tolerant of common wrappers.

Every way a checkpoint can fail to load raises :class:`WeightsError` (a ``ValueError``) whose message
names the file, says what is wrong with it and where such weights come from: an empty file, a
truncated or corrupt torch checkpoint, a file that is no torch checkpoint at all (text, a Git LFS
pointer, random bytes), a checkpoint that holds something other than a state_dict (or objects that
``torch.load(..., weights_only=True)`` refuses), NaN or infinite values, and keys or shapes that do
not match the model (:class:`WeightsMismatchError`, also a ``RuntimeError`` as ``load_state_dict``
raises). A missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MMFusionError

__all__ = ["load_weights", "WeightsError", "WeightsMismatchError", "read_checkpoint", "fit_problems", "non_finite", "names"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled magic number of the legacy format
_LFS_POINTER = b"version https://git-lfs"
_SHOWN = 5  # names listed in a summary before "..."


class WeightsError(MMFusionError, ValueError):
    """A checkpoint file that cannot be read, is not a state_dict, holds non-finite values or does not fit the model."""


class WeightsMismatchError(WeightsError, RuntimeError):
    """A state_dict whose keys or shapes do not match the model (a ``RuntimeError`` like ``load_state_dict``'s)."""


def names(items: list[str], shown: int = _SHOWN) -> str:
    head = ", ".join(items[:shown])
    return head + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")


def _format(data: bytes) -> str:
    """What the first bytes of a file look like: 'zip', 'legacy', 'lfs', 'text' or 'binary'."""
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    if data.startswith(_LEGACY_MAGIC):
        return "legacy"
    if data.startswith(_LFS_POINTER):
        return "lfs"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            text = data[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return "text" if text and printable >= 0.95 * len(text) else "binary"


def read_checkpoint(path: Path, fail) -> Any:
    """``torch.load(path, weights_only=True)``, every failure turned into a :class:`WeightsError` by ``fail``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise fail(f"the file cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise fail("the file is empty (0 bytes; an interrupted download or copy?)")
    kind = _format(head)
    if kind == "lfs":
        raise fail("the file is a Git LFS pointer, not the weights (run `git lfs pull` in the repository it came from)")
    if kind == "text":
        start = head[:40].decode("utf-8", "replace").splitlines()[0] if head.strip() else ""
        raise fail(f"the file is text ({size} bytes, starts {start!r}), not a torch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        if kind in ("zip", "legacy"):
            raise fail(
                "the checkpoint holds Python objects that torch.load(..., weights_only=True) refuses to load "
                f"(a whole pickled model or custom classes: {_reason(exc)}); save model.state_dict() instead"
            ) from exc
        raise fail(f"the file is not a torch checkpoint ({size} bytes in neither torch's zip nor its legacy format)") from exc
    except Exception as exc:  # EOFError, RuntimeError from the zip reader, KeyError / UnicodeDecodeError from pickle, ...
        if kind == "zip" and zipfile.is_zipfile(path):
            raise fail(f"the file is a zip archive but not a torch checkpoint ({size} bytes; {_reason(exc)})") from exc
        if kind in ("zip", "legacy"):
            raise fail(f"the checkpoint is truncated or corrupt ({size} bytes; {_reason(exc)}; an interrupted download or copy?)") from exc
        raise fail(f"the file is not a torch checkpoint ({size} bytes in neither torch's zip nor its legacy format)") from exc


def _reason(exc: BaseException) -> str:
    """A one-line gist of a torch.load error (its own messages run to paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m|\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(exc))
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported:
        return f"{unsupported.group(1)} is not an allowed global"
    if "central directory" in text:
        return "its zip archive has no central directory (the end of the file is missing)"
    first = re.split(r"(?<=\.)\s|\n", text.strip(), maxsplit=1)[0].strip() if text.strip() else ""
    if isinstance(exc, EOFError):
        return "the data ends before the end of the pickled objects"
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def _state_dict(obj: Any, fail) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        size = f" of {len(obj)}" if hasattr(obj, "__len__") else ""
        raise fail(f"the checkpoint holds a {type(obj).__name__}{size}, not a state_dict (a mapping of parameter names to tensors)")
    if not obj:
        raise fail("the checkpoint holds an empty mapping, not a state_dict")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        keys = [repr(k) for k in obj]
        raise fail(
            f"the checkpoint is not a state_dict: {len(bad)} of its {len(obj)} entries are not named tensors "
            f"({names(bad)}); its keys: {names(keys)}"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def _mismatch(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    expected = net.state_dict()
    # torch fills a missing num_batches_tracked of batch-norm layers in (checkpoints from torch < 0.4.1
    # lack it, the official MFNet one among them), so strict loading accepts its absence
    filled = {
        f"{name}.num_batches_tracked" if name else "num_batches_tracked"
        for name, module in net.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    }
    parts = fit_problems(expected, state, optional=filled)
    if not parts:
        return None
    common = len([k for k in expected if k in state])
    hint = " (no key in common: a checkpoint of another architecture?)" if common == 0 else ""
    return f"the checkpoint does not match {type(net).__name__}'s state_dict ({len(state)} vs {len(expected)} entries): " + "; ".join(parts) + hint


def fit_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, source: str = "checkpoint",
                 optional: Iterable[str] = ()) -> list[str]:
    """What keeps ``state`` from loading where ``expected`` (a state_dict) is: missing keys (other than
    ``optional``), unexpected keys, shape mismatches; one phrase each, empty when it fits."""
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({names(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) ({names(shapes, 3)})")
    return parts


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [
        k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all())
    ]


def load_weights(net: nn.Module, path: str | Path, where: str) -> nn.Module:
    """Load ``path`` into ``net`` strictly: a plain state_dict, or one wrapped in ``{"state_dict": ...}`` /
    ``{"model": ...}``, with any ``module.`` (DataParallel) prefix removed. ``where`` tells the user
    where such weights come from when the file is missing or unusable.

    Raises ``FileNotFoundError`` for a missing file, :class:`WeightsMismatchError` for keys or shapes
    that do not fit ``net`` and :class:`WeightsError` for anything else (unreadable, empty, truncated,
    not a torch checkpoint, not a state_dict, NaN / infinite values); ``net`` is left unchanged then."""
    path = Path(path)
    model = type(net).__name__
    if path.is_dir():
        raise WeightsError(f"cannot load {model} weights from {str(path)!r}: it is a directory, not a checkpoint file; {where}")
    if not path.is_file():
        raise FileNotFoundError(f"{model} weights not found at {str(path)!r}; {where}")

    def fail(problem: str, cls: type[WeightsError] = WeightsError) -> WeightsError:
        return cls(f"cannot load {model} weights from {str(path)!r}: {problem}. {where}")

    state = _state_dict(_unwrap(read_checkpoint(path, fail)), fail)
    mismatch = _mismatch(net, state)
    if mismatch:
        raise fail(mismatch, WeightsMismatchError)
    bad = non_finite(state)
    if bad:
        raise fail(f"{len(bad)} tensor(s) hold NaN or infinite values ({names(bad)}; a diverged training run?)")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the checks above did not foresee
        raise fail(f"load_state_dict refused the state_dict: {exc}", WeightsMismatchError) from exc
    return net
