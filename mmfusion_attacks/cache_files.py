"""Cache files of the trained defaults: written atomically, read back with errors that name the file.

The embedded defaults (:func:`mmfusion_attacks.zoo.synthetic_default`, the image+text defaults of
:mod:`mmfusion_attacks.models.vl_training`, the CLIP-like heads of :mod:`mmfusion_attacks.models.clip_like`)
are trained by this package and cached under :func:`mmfusion_attacks.zoo.cache_dir`.

* :func:`atomic_save` writes ``torch.save(obj)`` to a temporary file in the cache's own folder, flushes
  and ``fsync``\\ s it, then ``os.replace``\\ s it onto the final name: a reader never sees half a file,
  whatever kills the writer (an exception, Ctrl-C, SIGKILL, a full disk). On an exception the temporary
  file is removed; only SIGKILL or a power cut can leave one behind (a hidden ``.<name>.*.tmp``, never
  read, safe to delete).
* :func:`load_cache` / :func:`load_state_cache` turn EVERY way a cache can be unusable (missing bytes,
  zero bytes, not a torch file, not a state_dict, keys or shapes that do not fit the model, NaN or
  infinite values) into a :class:`CacheFileError` whose message names the file, says what is wrong and
  says the remedy. The model is left untouched when the cache is refused.
* :func:`load_or_discard` is what the defaults call. Policy: **a corrupt cache of a trained default is
  not fatal** -- it holds nothing the user made (the package re-creates it from its own recipe and
  seed), so it is deleted with a :class:`CacheFileWarning` naming the file and why, and the default is
  trained again, which is what a user who hit an interrupted run wants. Failing instead would only make
  them find and delete the file by hand. A checkpoint the *user* names (``--weights``, loaded by
  :func:`mmfusion_attacks.models.weights.load_weights`) is never deleted or replaced: its errors are
  raised, since silently substituting other weights would change what is being attacked.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .models.weights import WeightsError, fit_problems, names, non_finite, read_checkpoint

__all__ = ["CacheFileError", "CacheFileWarning", "atomic_save", "load_cache", "load_state_cache", "load_or_discard", "check_report"]

T = TypeVar("T")

REMEDY = "delete the file; it is re-trained on the next run"


class CacheFileError(WeightsError, RuntimeError):
    """A cache file of a trained default that cannot be used (truncated, empty, not a torch file, wrong
    content, keys or shapes that do not fit the model). A :class:`~mmfusion_attacks.models.weights.WeightsError`
    (a ``ValueError``) and a ``RuntimeError`` (as ``load_state_dict`` raises), so existing handlers keep working.
    ``path`` and ``problem`` are kept as attributes."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"cached weights {str(path)!r} cannot be used: {problem}; {REMEDY}")


class CacheFileWarning(UserWarning):
    """A corrupt cache of a trained default was deleted and the default is trained again."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically: to a temporary file in ``path``'s folder (created if needed),
    flushed and fsync'ed, then ``os.replace``\\ d onto ``path``. If anything fails the temporary file is
    removed and ``path`` keeps its previous content (or stays absent). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform / file system allows fsync on a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def load_cache(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure (missing, unreadable,
    empty, truncated, garbage, objects ``weights_only`` refuses) raises :class:`CacheFileError`."""
    path = Path(path)
    if not path.is_file():
        raise CacheFileError(path, "the file does not exist" if not path.exists() else "it is not a regular file")

    def fail(problem: str, cls: type = CacheFileError) -> CacheFileError:
        return CacheFileError(path, problem)

    try:
        return read_checkpoint(path, fail)
    except CacheFileError:
        raise
    except Exception as exc:  # anything read_checkpoint did not foresee
        raise CacheFileError(path, f"torch.load failed ({type(exc).__name__}: {str(exc)[:160]})") from exc


def _check_state(net: nn.Module, state: Any, path: Path, skip: Sequence[str], only: Sequence[str] | None) -> dict[str, torch.Tensor]:
    def fail(problem: str) -> CacheFileError:
        return CacheFileError(path, problem)

    if not isinstance(state, Mapping):
        raise fail(f"it holds a {type(state).__name__}, not a state_dict")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise fail(f"it is not a state_dict: {len(bad)} of its {len(state)} entries are not named tensors ({names(bad)})")
    skip, only = tuple(skip), None if only is None else tuple(only)
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(skip) and (only is None or k.startswith(only))}
    parts = fit_problems(expected, state, source="cache")
    if parts:
        raise fail(f"the weights do not fit {type(net).__name__} ({len(state)} cached vs {len(expected)} expected entries): " + "; ".join(parts))
    nonfinite = non_finite(state)
    if nonfinite:
        raise fail(f"{len(nonfinite)} tensor(s) hold NaN or infinite values ({names(nonfinite)})")
    return dict(state)


def load_state_cache(net: nn.Module, path: str | Path, *, skip: Sequence[str] = (), only: Sequence[str] | None = None,
                     state: Any = None) -> nn.Module:
    """Load the cached state_dict at ``path`` (or the already read ``state`` that came from it) into ``net``.
    The cache must hold exactly ``net``'s entries that are not under the prefixes ``skip`` and, when
    ``only`` is given, are under one of its prefixes, with the same shapes and finite values; otherwise
    :class:`CacheFileError`, and ``net`` is not modified. Returns ``net``."""
    path = Path(path)
    state = _check_state(net, load_cache(path) if state is None else state, path, skip, only)
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # anything the checks above did not foresee
        raise CacheFileError(path, f"load_state_dict refused it ({str(exc)[:200]})") from exc
    return net


def check_report(value: Any, path: str | Path) -> dict:
    """A JSON object stored as a string next to cached weights, parsed; else :class:`CacheFileError`."""
    try:
        report = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise CacheFileError(path, f"its report is not a JSON object (got {type(value).__name__})")
    return report


def load_or_discard(path: str | Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)`` if ``path`` is a file; ``None`` if there is none, or if ``load`` raised
    :class:`CacheFileError`: then the file is deleted with a :class:`CacheFileWarning` naming it and the
    reason, and the caller trains the default again (see the module docstring for why)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load(path)
    except CacheFileError as exc:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as unlink_error:  # cannot delete: retraining would overwrite it anyway, but say so
            raise CacheFileError(path, f"{exc.problem}, and it cannot be deleted ({unlink_error.strerror or unlink_error})") from exc
        warnings.warn(f"discarded the unusable cache {str(path)!r} ({exc.problem}); training the default again",
                      CacheFileWarning, stacklevel=3)
        return None
