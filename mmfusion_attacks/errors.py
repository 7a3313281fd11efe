"""Specific exception types: every message names the modality (or label/attack) and the problem."""

from __future__ import annotations

__all__ = [
    "MMFusionError",
    "InputError",
    "UnknownModalityError",
    "MissingModalityError",
    "ShapeMismatchError",
    "NonFiniteInputError",
    "ValueRangeError",
    "LabelError",
    "EmptySubsetError",
    "RowAlignmentError",
    "UnsupportedAttackError",
    "InvariantViolationError",
    "NonFiniteOutputError",
    "NoPerturbationWarning",
    "MissingResourceError",
    "TextInputError",
    "ModelOutputError",
]


class MMFusionError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(MMFusionError, ValueError):
    """An input batch does not match the declared modalities."""


class UnknownModalityError(InputError, KeyError):
    """A name that is not one of the model's modalities (or not a registered preset)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingModalityError(InputError):
    """A declared modality is absent from the batch."""


class ShapeMismatchError(InputError):
    """Wrong rank, channel count, per-sample shape, dtype, or batch size."""


class NonFiniteInputError(InputError):
    """NaN or infinity in a modality."""


class ValueRangeError(InputError):
    """Values outside a modality's declared valid range."""


class LabelError(InputError):
    """Labels of the wrong shape or dtype for the task, or outside [0, num_classes)."""


class EmptySubsetError(InputError):
    """An attack was asked to target no modality at all."""


class RowAlignmentError(MMFusionError, RuntimeError):
    """A toolkit queried the attack surface with rows that cannot be paired with their frozen context."""


class UnsupportedAttackError(MMFusionError, TypeError):
    """An attack (or attack configuration) this package cannot run correctly on the given surface."""


class InvariantViolationError(MMFusionError, RuntimeError):
    """A toolkit returned an adversarial outside its budget or the valid range (beyond float tolerance)."""


class NonFiniteOutputError(MMFusionError, RuntimeError):
    """The model returned NaN or infinite logits: no attack result computed from them can be trusted."""


class MissingResourceError(MMFusionError, RuntimeError):
    """A file or corpus an attack, model or dataset needs (WordNet, stopwords, weights, embeddings) is not
    available offline; the message names it and says how to get it."""


class TextInputError(InputError):
    """Text a text attack cannot work on (empty, not a string, only stopwords, too long for the model)."""


class ModelOutputError(MMFusionError, TypeError):
    """A model output whose logits cannot be told apart without a selector (a tuple of several tensors,
    a mapping with no known logits key): guessing could attack the wrong head."""


class NoPerturbationWarning(UserWarning):
    """An attack returned every row unchanged although the model was not already fooled on all of them."""
