"""The study's random text perturbations as seeded TextAttack augmenters.

- :class:`SynonymSubstitution` — WordNet synonyms (TextAttack's ``WordSwapWordNet``) for a fraction
  of the *eligible* words.
- :class:`WordDeletion` — deletes a fraction of all words (TextAttack's ``WordDeletion``).

Both are ``textattack.augmentation.Augmenter`` subclasses: TextAttack's own loop picks and applies
the changes; this module adds only what it lacks:

- **Seeds that reproduce across processes and batches.** TextAttack draws from the global ``random``
  module. Each text gets its own generator seed derived from ``(seed, text)`` — SHA-256, not
  Python's salted ``hash`` — or from ``(seed, id)`` when ``ids`` are given; the global ``random``
  state is saved and restored around each text. So a text's result does not depend on its position,
  on the other texts in the batch, or on ``PYTHONHASHSEED``. Consequence of keying by content:
  identical texts get identical perturbations; pass ``ids`` (e.g. dataset indices) to vary them.
  TextAttack's WordNet swap collects synonyms in a ``set`` whose order depends on ``PYTHONHASHSEED``;
  :class:`SortedWordSwapWordNet` sorts them.
- **Exact counts.** TextAttack changes ``max(int(pct * n_words), 1)`` words, counted over *all*
  words. Here the target is ``k = floor(fraction * n_eligible)`` (computed in exact decimal
  arithmetic, so 0.29 * 100 is 29, not 28) with at least one change when ``fraction > 0`` and
  something is eligible; ``fraction == 0`` changes nothing. ``k`` is handed to TextAttack's loop by
  setting ``pct_words_to_swap = (k + 0.5) / n_words`` for that text, which its rule truncates to
  exactly ``k``.

  * Deletion: eligible = all words (stopwords too, as in TextAttack's ``DeletionAugmenter``, where
    ``StopwordModification`` does not apply to deletions), capped at ``n_words - 1`` because
    TextAttack's ``WordDeletion`` never deletes the last word: 50% of 20 words deletes 10, 50% of 7
    deletes 3, 100% of 5 deletes 4, a one-word text is skipped.
  * Synonyms: eligible = words that are not stopwords (case-insensitive, from the prepared nltk list:
    nltk's 179 words, or scikit-learn's 318 when nltk's is not installed) and have at least one
    WordNet synonym that is a single word differing from it by more than case. 20% / 40% of 12 eligible
    words change 2 / 4 of them.

- **Per-text details** (:meth:`SeededAugmenter.details`): words, eligible words, target and
  actual changes, derived seed, and why a text was skipped.
- **Bad input.** A non-string raises :class:`TextInputError` naming its index. A text with nothing to
  change (empty, only whitespace / punctuation, only stopwords, no synonyms, a single word for
  deletion) is returned unchanged with ``skipped`` set (``on_invalid="skip"``, the default; counted
  by :meth:`SeededAugmenter.summary`), or raises :class:`TextInputError` with ``on_invalid="raise"``.

Not thread-safe: one augmenter instance per thread (it seeds the process-global ``random`` module).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..errors import TextInputError
from .resources import import_textattack, require_wordnet

textattack = import_textattack(feature="The text augmenters (SynonymSubstitution, WordDeletion)")

from nltk.corpus import stopwords as _nltk_stopwords  # noqa: E402  (after import_textattack set the path)
from textattack.augmentation import Augmenter  # noqa: E402
from textattack.constraints.pre_transformation import RepeatModification, StopwordModification  # noqa: E402
from textattack.shared import AttackedText  # noqa: E402
from textattack.transformations import WordDeletion as _TAWordDeletion  # noqa: E402
from textattack.transformations import WordSwapWordNet  # noqa: E402

__all__ = [
    "SeededAugmenter",
    "SynonymSubstitution",
    "WordDeletion",
    "AugmentedText",
    "SortedWordSwapWordNet",
    "CaseInsensitiveStopwordModification",
    "derive_seed",
    "target_count",
]


def derive_seed(seed: int, key: str) -> int:
    """A 64-bit seed from ``(seed, key)``, identical in every process (SHA-256, not ``hash``)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def target_count(fraction: float, n_eligible: int) -> int:
    """``floor(fraction * n_eligible)``, at least 1 when ``fraction > 0`` and ``n_eligible > 0``.
    Exact: the fraction is taken as its shortest decimal repr (0.29 * 100 = 29)."""
    if n_eligible <= 0 or fraction <= 0:
        return 0
    k = math.floor(Fraction(Decimal(repr(float(fraction)))) * n_eligible)
    return min(max(k, 1), n_eligible)


class SortedWordSwapWordNet(WordSwapWordNet):
    """``WordSwapWordNet`` with its candidates sorted (TextAttack returns ``list(set)``, whose order
    depends on ``PYTHONHASHSEED``) and without case-only variants ("It" -> "IT"). The constructor
    skips the parent's ``nltk.download("omw-1.4")`` (made on every construction; only needed for
    non-English WordNets) and checks that WordNet loads instead."""

    def __init__(self, language: str = "eng") -> None:
        require_wordnet()
        from nltk.corpus import wordnet

        if language not in wordnet.langs():
            raise ValueError(f"Language {language} not one of {wordnet.langs()}")
        self.language = language

    def _get_replacement_words(self, word, random=False):  # noqa: A002 - TextAttack's signature
        low = word.lower()
        return sorted({w for w in super()._get_replacement_words(word) if w.lower() != low})


class CaseInsensitiveStopwordModification(StopwordModification):
    """TextAttack's ``StopwordModification`` compares words as written, so "The" or "It" (capitalised)
    are not protected; this compares lower-cased words."""

    def __init__(self, stopwords: Sequence[str] | None = None, language: str = "english") -> None:
        words = _nltk_stopwords.words(language) if stopwords is None else stopwords
        super().__init__(stopwords={w.lower() for w in words})

    def _get_modifiable_indices(self, current_text):
        return {i for i, w in enumerate(current_text.words) if w.lower() not in self.stopwords}


@dataclass(frozen=True)
class AugmentedText:
    """One text's result: ``n_changed`` of ``n_eligible`` words changed (target ``n_target``)."""

    index: int
    original: str
    perturbed: str
    n_words: int
    n_eligible: int
    n_target: int
    n_changed: int
    seed: int
    skipped: str | None = None  # why nothing could be changed (empty, only stopwords, ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SeededAugmenter(Augmenter):
    """Base of the seeded augmenters: TextAttack's ``Augmenter`` with one transformation per text,
    a per-text seed and an exact number of changes. Call it on a list of strings."""

    kind = "perturbation"

    def __init__(self, transformation, constraints, fraction: float, *, seed: int = 0, on_invalid: str = "skip") -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"{type(self).__name__}: fraction must be a number in [0, 1], got {fraction!r}")
        if on_invalid not in ("skip", "raise"):
            raise ValueError(f"{type(self).__name__}: on_invalid must be 'skip' or 'raise', got {on_invalid!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{type(self).__name__}: seed must be an int, got {seed!r}")
        super().__init__(transformation, constraints=constraints, pct_words_to_swap=float(fraction), transformations_per_example=1)
        self.fraction = float(fraction)
        self.seed = seed
        self.on_invalid = on_invalid
        self._last: list[AugmentedText] = []

    # ---- what subclasses define
    def eligible_indices(self, text: AttackedText) -> set[int]:
        """Word indices TextAttack's transformation may change under the pre-transformation constraints."""
        return set(self.transformation(text, self.pre_transformation_constraints, return_indices=True))

    def _max_changes(self, n_words: int, n_eligible: int) -> int:
        return n_eligible

    def _count_changed(self, original: AttackedText, perturbed: AttackedText) -> int:
        raise NotImplementedError

    def _why_nothing(self, text: AttackedText) -> str:
        return "no eligible words"

    # ---- the seeded, counted run
    def _one(self, index: int, text: Any, key: str | None) -> AugmentedText:
        if not isinstance(text, str):
            raise TextInputError(f"{type(self).__name__}: text {index} must be a str, got {type(text).__name__}: {text!r:.80}")
        seed = derive_seed(self.seed, text if key is None else f"id:{key}")
        attacked = AttackedText(text)
        n_words = len(attacked.words)
        eligible = self.eligible_indices(attacked) if n_words else set()
        k = min(target_count(self.fraction, len(eligible)), self._max_changes(n_words, len(eligible)))
        if k == 0:
            reason = None
            if self.fraction > 0:
                reason = "empty text (no words)" if n_words == 0 else self._why_nothing(attacked)
                if self.on_invalid == "raise":
                    raise TextInputError(f"{type(self).__name__}: text {index} has nothing to change ({reason}): {text!r:.80}")
            return AugmentedText(index, text, text, n_words, len(eligible), 0, 0, seed, reason)
        state = random.getstate()
        try:
            random.seed(seed)
            self.pct_words_to_swap = (k + 0.5) / n_words  # TextAttack: max(int(pct * n_words), 1) == k
            out = Augmenter.augment(self, text)
        finally:
            random.setstate(state)
            self.pct_words_to_swap = self.fraction
        perturbed = out[0] if out else text
        n_changed = self._count_changed(attacked, AttackedText(perturbed))
        return AugmentedText(index, text, perturbed, n_words, len(eligible), k, n_changed, seed)

    def details(self, texts: Sequence[str], ids: Sequence[Any] | None = None) -> list[AugmentedText]:
        """Perturb ``texts`` and return one :class:`AugmentedText` per text (also kept as ``last_details``).
        ``ids``: per-text keys for the seed instead of the text itself."""
        if isinstance(texts, str):
            raise TextInputError(f"{type(self).__name__}: expected a list of texts, got one str (wrap it in a list)")
        texts = list(texts)
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(texts):
                raise TextInputError(f"{type(self).__name__}: {len(ids)} ids for {len(texts)} texts")
        out = [self._one(i, t, None if ids is None else str(ids[i])) for i, t in enumerate(texts)]
        self._last = out
        return out

    def __call__(self, texts: Sequence[str], ids: Sequence[Any] | None = None) -> list[str]:
        """The perturbed texts, in order (details of the call: ``last_details``)."""
        return [d.perturbed for d in self.details(texts, ids)]

    @property
    def last_details(self) -> list[AugmentedText]:
        return list(self._last)

    def augment(self, text: str) -> list[str]:
        """TextAttack's API (also behind ``augment_many`` / ``augment_text_with_ids``), seeded and counted."""
        return [self._one(0, text, None).perturbed]

    @staticmethod
    def summary(details: Sequence[AugmentedText]) -> dict[str, Any]:
        """Totals for reporting: texts, skipped (by reason), words, eligible, changed, changed/eligible."""
        skipped: dict[str, int] = {}
        for d in details:
            if d.skipped:
                skipped[d.skipped] = skipped.get(d.skipped, 0) + 1
        eligible = sum(d.n_eligible for d in details)
        changed = sum(d.n_changed for d in details)
        return {
            "texts": len(details),
            "skipped": sum(skipped.values()),
            "skipped_by_reason": skipped,
            "words": sum(d.n_words for d in details),
            "eligible": eligible,
            "target": sum(d.n_target for d in details),
            "changed": changed,
            "changed_fraction_of_eligible": changed / eligible if eligible else 0.0,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fraction={self.fraction}, seed={self.seed}, on_invalid={self.on_invalid!r})"


class SynonymSubstitution(SeededAugmenter):
    """Replace ``fraction`` of the eligible words (not stopwords, with a WordNet synonym) by a random
    WordNet synonym. Constraints: TextAttack's ``RepeatModification`` (a word changes at most once)
    and a case-insensitive ``StopwordModification`` (``stopwords`` default: the prepared nltk list)."""

    kind = "synonym substitution"

    def __init__(self, fraction: float, seed: int = 0, *, stopwords: Sequence[str] | None = None, on_invalid: str = "skip") -> None:
        super().__init__(
            SortedWordSwapWordNet(),
            [RepeatModification(), CaseInsensitiveStopwordModification(stopwords)],
            fraction,
            seed=seed,
            on_invalid=on_invalid,
        )

    @property
    def stopwords(self) -> frozenset[str]:
        return frozenset(self.pre_transformation_constraints[1].stopwords)

    def eligible_indices(self, text: AttackedText) -> set[int]:
        indices = super().eligible_indices(text)
        words = text.words
        return {i for i in indices if self.transformation._get_replacement_words(words[i])}

    def _count_changed(self, original: AttackedText, perturbed: AttackedText) -> int:
        a, b = original.words, perturbed.words
        if len(a) != len(b):  # cannot happen: WordNet swaps are single words (is_one_word)
            return sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))
        return sum(1 for x, y in zip(a, b) if x != y)

    def _why_nothing(self, text: AttackedText) -> str:
        if all(w.lower() in self.stopwords for w in text.words):
            return "only stopwords"
        return "no eligible words (no non-stopword has a WordNet synonym)"


class WordDeletion(SeededAugmenter):
    """Delete ``fraction`` of the words (stopwords included; TextAttack never deletes the last one).
    Constraint: TextAttack's ``RepeatModification``."""

    kind = "word deletion"

    def __init__(self, fraction: float, seed: int = 0, *, on_invalid: str = "skip") -> None:
        super().__init__(_TAWordDeletion(), [RepeatModification()], fraction, seed=seed, on_invalid=on_invalid)

    def eligible_indices(self, text: AttackedText) -> set[int]:
        return set(range(len(text.words)))  # every word, stopwords included

    def _max_changes(self, n_words: int, n_eligible: int) -> int:
        return max(n_words - 1, 0)  # TextAttack's WordDeletion never deletes the last word

    def _count_changed(self, original: AttackedText, perturbed: AttackedText) -> int:
        return len(original.words) - len(perturbed.words)

    def _why_nothing(self, text: AttackedText) -> str:
        return "a single word (deletion keeps at least one)"
