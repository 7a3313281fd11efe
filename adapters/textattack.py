"""TextAttack adapter: attack the text of a fusion model while every other modality of the example is held.

TextAttack queries a :class:`~textattack.models.wrappers.ModelWrapper` with lists of texts. A fusion
model also needs the example's image (or other held modalities), and TextAttack has no notion of
them. :class:`FusionModelWrapper` makes the held modalities part of the attacked input: each example
is an ``OrderedDict(text=..., example=key)`` whose second column is an opaque key of the example's
held tensors (registered in the wrapper). The key is written in symbols that contain no word, so no
transformation can change it, and it is part of everything TextAttack keys on. Hence:

* every query row meets the held modalities of ITS example (bit-identical, whatever TextAttack's
  batching, ``Attacker`` ordering or worker pickling does; an unknown key is an error);
* TextAttack's goal-function cache, keyed by the attacked text, can never hand an example the
  scores of another one with the same caption (measured trap: a skipped example leaves its scores
  in the cache; with a text-only key the next example with that caption was wrongly skipped);
* where the network exposes towers (``encode`` / ``fuse``, see :attr:`FusionModel.towers`), the held
  modalities are encoded once per example and reused for every text query.

:func:`run_attack` accepts a TextAttack ``Attack`` built on this wrapper like any tensor attack and
returns the same :class:`~mmfusion_attacks.runner.AdversarialBatch` (texts + unchanged tensors).
"""

from __future__ import annotations

import difflib
import hashlib
import warnings
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmfusion_attacks.errors import (
    InputError,
    LabelError,
    NonFiniteOutputError,
    RowAlignmentError,
    TextInputError,
    UnsupportedAttackError,
)
from mmfusion_attacks.fusion import FusionModel
from mmfusion_attacks.metrics import predicted_classes
from mmfusion_attacks.result import (
    AdversarialBatch,
    CleanLogits,
    as_class_ids,
    batch_fingerprint,
    build_result,
    clean_pass,
    scored_clean_pass,
    working_copy,
)
from mmfusion_attacks.runner import AttackDriver, register_driver
from mmfusion_attacks.surface import frozen_model_state
from mmfusion_attacks.text.resources import import_textattack

textattack = import_textattack(feature="The TextAttack adapter (FusionModelWrapper, TextAttack attacks)")
from textattack.goal_functions import UntargetedClassification  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from textattack.shared import validators as _validators  # noqa: E402

# A FusionModel returns class logits: tell TextAttack's goal-function check so (else it logs
# "Unknown if model ... compatible" for every recipe built).
_CLASSIFIERS = _validators.MODELS_BY_GOAL_FUNCTION[UntargetedClassification]  # shared by the classification goals
if r"^mmfusion_attacks\.fusion\.FusionModel$" not in _CLASSIFIERS:
    _CLASSIFIERS.append(r"^mmfusion_attacks\.fusion\.FusionModel$")

__all__ = [
    "FusionModelWrapper",
    "FusionDataset",
    "TextAttackDriver",
    "KEY_COLUMN",
    "DEFAULT_MAX_WORDS",
    "text_attack_dataset",
    "words_changed",
    "perturb_text",
    "check_texts",
    "prepare_attack",
    "check_checkpoint",
]

#: name of the column that carries an example's key in TextAttack inputs
KEY_COLUMN = "example"
#: texts with more words are refused (or skipped) when the model declares no token limit: a search
#: over every word costs words^2 queries (a 6,000-word report ran > 9 min at 3.8 GB and growing)
DEFAULT_MAX_WORDS = 512
# 16 symbols TextAttack's word splitter never treats as (part of) a word
_KEY_SYMBOLS = "!#$%&+,.:;<=>?^|"


def _key_from_digest(digest: bytes) -> str:
    return "".join(_KEY_SYMBOLS[b >> 4] + _KEY_SYMBOLS[b & 15] for b in digest[:8])


def words_changed(original: Any, perturbed: Any) -> int:
    """Words edited between two texts (``AttackedText`` or ``str``), counted on an alignment of the two word
    sequences: a substituted word counts once, a deleted or inserted word once (a position-wise diff would
    count every word after a deletion as changed)."""
    a = original.words if hasattr(original, "words") else textattack.shared.AttackedText(original).words
    b = perturbed.words if hasattr(perturbed, "words") else textattack.shared.AttackedText(perturbed).words
    edits = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        edits += _edit_distance(a[i1:i2], b[j1:j2]) if op == "replace" else (i2 - i1) + (j2 - j1)
    if len(a) == len(b):  # substitutions in place are an alignment too
        edits = min(edits, sum(x != y for x, y in zip(a, b)))
    return min(edits, max(len(a), len(b)))


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two short word sequences (one differing block of an alignment)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


class FusionModelWrapper(ModelWrapper):
    """A TextAttack model wrapper for a :class:`FusionModel` with a text modality.

    A recipe sees only the text; every other modality of the current example is held fixed. Register
    examples with :meth:`examples` (per-example loop) or :meth:`dataset` (``textattack.Attacker``),
    which return inputs carrying each example's key.

    Args:
        fusion: the model.
        text: the attacked text modality (default: the model's only text modality).
        batch_size: rows per forward pass (TextAttack's own ``model_batch_size`` chunks first).
        cache_features: reuse the held modalities' tower features across queries (when the network
            exposes ``encode`` / ``fuse``); invalidated when the model's parameters change.
        long_text: texts longer than the model reads (networks with ``count_tokens`` / ``max_text_tokens``)
            or than ``max_words``: ``"error"`` (a :class:`TextInputError` before any work) or ``"skip"`` (not
            attacked; counted in the result's flags), since words past the limit could be "changed" without
            effect, and a search over thousands of words runs for hours.
        max_words: the longest text (in TextAttack words) an attack runs on (``None``: no limit).

    The feature cache equals the full forward: it is keyed by the example and by a stamp of the model
    (every parameter's and buffer's identity, version and content checksum, every module's mode), so
    writes through ``.data``, ``load_state_dict``, optimiser steps and buffer updates all invalidate it.
    It is off, with the reason in :attr:`cache_off_reason` and the result's flags, where reuse cannot
    equal the full forward: a preprocessing defence on a held modality (it may be random), or autocast
    (features computed alone round differently).
    """

    def __init__(
        self,
        fusion: FusionModel,
        text: str | None = None,
        *,
        batch_size: int = 32,
        cache_features: bool = True,
        long_text: str = "error",
        max_words: int | None = DEFAULT_MAX_WORDS,
    ) -> None:
        if not isinstance(fusion, FusionModel):
            raise TypeError(f"FusionModelWrapper needs a FusionModel, got {type(fusion).__name__}")
        texts = [n for n, m in fusion.modalities.items() if m.kind == "text"]
        if text is None:
            if len(texts) != 1:
                raise UnsupportedAttackError(
                    f"the model has text modalities {texts}: pass text= to say which one TextAttack perturbs"
                    if texts
                    else f"the model has no text modality (modalities {fusion.names}): TextAttack perturbs text; "
                    "attack tensor modalities with ART or torchattacks"
                )
            text = texts[0]
        mod = fusion.modality(text)
        if mod.kind != "text":
            raise UnsupportedAttackError(
                f"modality '{text}' is a {mod.kind} modality: TextAttack perturbs text only; attack it with ART or "
                "torchattacks (mmfusion_attacks.adapters.art / .torchattacks)"
            )
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if long_text not in ("error", "skip"):
            raise ValueError(f"long_text must be 'error' or 'skip', got {long_text!r}")
        if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
            raise ValueError(f"max_words must be a positive int or None, got {max_words!r}")
        self.long_text = long_text
        self.max_words = max_words
        self.model = fusion
        self.text = text
        self.held = tuple(n for n in fusion.modalities if n != text)
        self.batch_size = batch_size
        self.cache_features = cache_features
        self._examples: dict[str, dict[str, Any]] = {}
        self._features: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._feature_stamp: tuple | None = None
        self._weights: torch.Tensor | None = None
        self._held_modules: dict[int, torch.nn.Module] = {}  # modules that ran while encoding held features
        self.feature_cache_size = 1024
        #: rows and forward calls seen (for reports and tests)
        self.rows_queried = 0
        self.calls = 0

    # ------------------------------------------------------------------ examples
    @property
    def uses_towers(self) -> bool:
        """Whether queries reuse the held modalities' tower features (see :attr:`cache_off_reason`)."""
        towers = self.model.towers
        if not (self.cache_features and self.text in towers and all(n in towers for n in self.held)):
            return False
        return self.cache_off_reason is None

    @property
    def cache_off_reason(self) -> str | None:
        """Why held features are recomputed for every query although the network has towers (None: cached)."""
        fusion = self.model
        defended = [n for n in self.held if n in fusion.defences]
        if defended:
            return f"a preprocessing defence on {defended} may be random: the held features are recomputed per query"
        if fusion.amp_dtype is not None:
            return f"autocast ({fusion.amp_dtype}): features encoded alone round differently from the full forward"
        return None

    def register(self, inputs: Mapping[str, Any], *, validate: bool = True) -> list[str]:
        """Hold each row's non-text modalities; return one key per row (equal content, equal key)."""
        if validate:
            n = self.model.validate_inputs(inputs)
        else:
            n = len(inputs[self.text])
        keys = []
        for i in range(n):
            row = {name: _row(inputs[name], i) for name in self.held}
            h = hashlib.sha256()
            for name in self.held:
                h.update(name.encode())
                h.update(repr(batch_fingerprint({name: row[name]})).encode())
                value = row[name]
                if isinstance(value, torch.Tensor):
                    h.update(value.detach().cpu().contiguous().numpy().tobytes())
            key = _key_from_digest(h.digest())
            if key not in self._examples:
                self._examples[key] = {
                    name: (v.detach().clone() if isinstance(v, torch.Tensor) else list(v)) for name, v in row.items()
                }
            keys.append(key)
        return keys

    def examples(self, inputs: Mapping[str, Any]) -> list[OrderedDict]:
        """TextAttack inputs for a named batch: ``OrderedDict(text=..., example=key)`` per row, to pass to
        ``attack.attack(example, label)``."""
        keys = self.register(inputs)
        return [OrderedDict([(self.text, t), (KEY_COLUMN, k)]) for t, k in zip(inputs[self.text], keys)]

    def dataset(self, inputs: Mapping[str, Any], labels: Any, **kwargs: Any):
        """A ``textattack.datasets.Dataset`` of this batch (examples carry their keys) for ``textattack.Attacker``."""
        return text_attack_dataset(self, inputs, labels, **kwargs)

    def forget(self) -> None:
        """Drop every held example and cached feature."""
        self._examples.clear()
        self._features.clear()

    def held_for(self, key: str) -> dict[str, Any]:
        try:
            return self._examples[key]
        except KeyError:
            raise RowAlignmentError(
                f"TextAttack queried the model with example key {key!r}, which this wrapper never registered: the "
                f"'{KEY_COLUMN}' column was changed, or the example comes from another wrapper (build inputs with "
                "wrapper.examples(batch) or wrapper.dataset(batch, labels))"
            ) from None

    # ------------------------------------------------------------------ queries
    def _split(self, item: Any) -> tuple[str, str]:
        if isinstance(item, str):
            joined = item.rsplit("\n", 1)
            if len(joined) == 2 and joined[1] and all(c in _KEY_SYMBOLS for c in joined[1].strip()):
                raise UnsupportedAttackError(
                    "a transformation rebuilt the query from the example's joined columns (text + its held-example "
                    f"key {joined[1]!r}), so its edits can land in the key: TextAttack's differential-evolution "
                    "transformations (BadCharacters2021) do this. Run the attack through run_attack or "
                    "mmfusion_attacks.text.build_text_attack('bad-characters', ...), or call prepare_attack(attack) "
                    "before textattack.Attacker, which confine them to the text column"
                )
            if len(self._examples) == 1:
                return item, next(iter(self._examples))
            raise RowAlignmentError(
                f"TextAttack queried the model with a bare text while {len(self._examples)} examples are held: "
                "a bare text cannot say which example's "
                f"{list(self.held)} it belongs to. Attack wrapper.examples(batch)[i] (text + example key) instead"
            )
        if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(v, str) for v in item):
            return item[0], item[1]
        raise RowAlignmentError(
            f"unexpected TextAttack input {item!r}: expected (text, example key) as built by wrapper.examples()"
        )

    def __call__(self, text_input_list: Sequence[Any], **kwargs: Any) -> torch.Tensor:
        rows = [self._split(item) for item in text_input_list]
        if not rows:
            return torch.zeros(0, 0)
        logits = self._batched(rows, self._forward)
        self.rows_queried += len(rows)
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutputError("the model returned NaN or infinite logits on a TextAttack query")
        return logits.float().cpu()

    def score(self, texts: Sequence[str], keys: Sequence[str]) -> torch.Tensor:
        """Logits (on the model's device) of registered examples with these texts, by the path the attack's
        queries take (the held modalities' cached tower features when :attr:`uses_towers`); not counted as
        queries. The driver scores the clean and the adversarial texts this way, so the held modalities
        are encoded once per example in a whole run."""
        return self._batched(list(zip(texts, keys)), self._logits)

    def _batched(self, rows: list[tuple[str, str]], forward: Any) -> torch.Tensor:
        outs = []
        with frozen_model_state(self.model), torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                if self.uses_towers:
                    self._check_stamp()  # per chunk: a model that writes its weights while running shows here
                outs.append(forward(rows[start : start + self.batch_size]))
        return torch.cat(outs)

    def _forward(self, rows: list[tuple[str, str]]) -> torch.Tensor:
        self.calls += 1
        return self._logits(rows)

    def _logits(self, rows: list[tuple[str, str]]) -> torch.Tensor:
        texts = [t for t, _ in rows]
        keys = [k for _, k in rows]
        fusion = self.model
        if self.uses_towers:
            feats = {name: torch.cat([self._held_features(k)[name] for k in keys]) for name in self.held}
            feats[self.text] = fusion.encode(self.text, texts)
            return fusion.fuse(feats)
        device = fusion.device
        batch: dict[str, Any] = {self.text: texts}
        for name in self.held:
            values = [self.held_for(k)[name] for k in keys]
            if isinstance(values[0], torch.Tensor):
                batch[name] = torch.cat(values).to(device)
            else:
                batch[name] = [v for value in values for v in value]
        return fusion(batch)

    def _check_stamp(self) -> None:
        """Drop cached features when the model changed in any way since they were computed."""
        if self._feature_stamp is None or not self._features:
            return
        stamp = self._model_stamp()
        if stamp != self._feature_stamp:  # training, loading, writes through .data, buffer updates
            self._features.clear()
            self._held_modules.clear()
            self._feature_stamp = None

    def _model_stamp(self) -> tuple:
        """Identity and version of every parameter and buffer, every module's mode, and a content checksum of
        the tensors the held features were computed from (the modules that ran in ``encode``, the network's
        and the wrapper's own). Versions miss writes through ``.data``; the checksum catches every bit that
        changed: each tensor's bits as int32, times fixed odd weights, summed modulo 2**32 (exact, so order
        and threads do not matter; one pass over those weights per query batch)."""
        fusion = self.model
        tensors = [*fusion.parameters(), *fusion.buffers()]
        owners = [fusion, fusion.model, *self._held_modules.values()]
        seen: dict[int, torch.Tensor] = {}
        for module in owners:
            for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                seen.setdefault(id(t), t)
        words = [_as_int32(t) for t in seen.values()]
        size = max((w.numel() for w in words), default=0)
        device = fusion.device
        if self._weights is None or self._weights.numel() < size or self._weights.device != device:
            gen = torch.Generator().manual_seed(0)
            odd = torch.randint(0, 2**30, (max(size, 1),), generator=gen, dtype=torch.int32) * 2 + 1
            self._weights = odd.to(device)
        sums = [(w * self._weights[: w.numel()].to(w.device)).sum(dtype=torch.int32) for w in words]
        checksum = tuple(torch.stack([v.cpu() for v in sums]).tolist()) if sums else ()
        meta = tuple((id(t), t._version, t.data_ptr(), str(t.dtype), tuple(t.shape)) for t in tensors)
        modes = tuple(m.training for m in fusion.modules())
        return meta, checksum, modes, fusion.amp_dtype

    def _held_features(self, key: str) -> dict[str, torch.Tensor]:
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        held = self.held_for(key)
        device = self.model.device
        ran: dict[int, torch.nn.Module] = {}

        def record(mod: torch.nn.Module, _: Any) -> None:  # a pre-hook's return value would replace the input
            ran.setdefault(id(mod), mod)

        hooks = [m.register_forward_pre_hook(record) for m in self.model.modules()]
        try:
            feats = {
                name: self.model.encode(name, v.to(device) if isinstance(v, torch.Tensor) else v) for name, v in held.items()
            }
        finally:
            for h in hooks:
                h.remove()
        if ran.keys() - self._held_modules.keys() or self._feature_stamp is None:
            self._held_modules.update(ran)  # stamp the weights these features came from, before anything else runs
            self._feature_stamp = self._model_stamp()
        self._features[key] = feats
        while len(self._features) > self.feature_cache_size:
            self._features.popitem(last=False)
        return feats

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_weights"] = None  # the checksum weights are rebuilt on demand (they are as large as the largest tensor)
        return state

    def _tokenize(self, inputs: Sequence[Any]) -> list[list[str]]:
        return [self._split(i)[0].split() if not isinstance(i, str) else i.split() for i in inputs]

    def __repr__(self) -> str:
        return f"FusionModelWrapper(text='{self.text}', held={list(self.held)}, towers={self.uses_towers})"


def _as_int32(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bits as a flat int32 tensor (a view where the element size allows)."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.to(torch.int32)
    size = flat.element_size()
    if size % 4 == 0:
        return flat.view(torch.int32)
    if size == 2:
        return flat.view(torch.int16).to(torch.int32)
    return flat.view(torch.uint8).to(torch.int32)


def _row(value: Any, i: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[i : i + 1]
    return [value[i]]


class FusionDataset(textattack.datasets.Dataset):
    """A ``textattack.datasets.Dataset`` whose rows carry their example key (see :func:`text_attack_dataset`).

    It checked its texts and labels as :func:`run_attack` does. With ``textattack.Attacker`` it also
    (through this adapter's hooks on ``Attacker``): skips, counted as ``SkippedAttackResult`` and listed in
    :attr:`skipped`, rows the attack cannot work on (only stopwords the attack protects, longer than the
    model reads with ``long_text="skip"``); confines differential-evolution transformations to the text
    column (:func:`prepare_attack`); refuses an attack built on another wrapper (its keys would be
    unknown); and refuses to resume a checkpoint made on this data in another row order (TextAttack
    stores row indices: some examples would be attacked twice and others never)."""

    def __init__(self, wrapper: FusionModelWrapper, rows: list, keys: list[str], checked: dict[str, list[int]], **kwargs: Any):
        super().__init__(rows, input_columns=[wrapper.text, KEY_COLUMN], **kwargs)
        self.wrapper = wrapper
        self.keys = keys
        self.too_long = set(checked.get("too-long", []))
        #: row -> reason, for rows an Attacker skipped (filled when the Attacker is built)
        self.skipped: dict[int, str] = {i: "longer than the model reads" for i in sorted(self.too_long)}
        self._skip_by_content: dict[tuple, str] = {}

    def row_fingerprint(self, i: int) -> tuple:
        example, label = self._dataset[i]
        return (*example, label)

    def bind_attack(self, attack: Any) -> None:
        """Check ``attack`` runs on this dataset's wrapper, confine its transformations to the text column,
        and compute the rows it would skip (its own stopwords)."""
        model = attack.goal_function.model
        if model is not self.wrapper:
            raise RowAlignmentError(
                f"the attack was built on {model!r}, this dataset on {self.wrapper!r}: its example keys are "
                "registered in the dataset's wrapper only. Build the recipe on the wrapper that made the dataset"
            )
        prepare_attack(attack)
        words = _stopwords(attack)
        self.skipped = {i: "longer than the model reads" for i in sorted(self.too_long)}
        for i in range(len(self)):
            text = self._dataset[i][0][0]
            if i in self.skipped:
                continue
            if not textattack.shared.AttackedText(text).words:
                self.skipped[i] = "no words: nothing a word-level attack can change"
            elif words and _only_stopwords(text, words):
                self.skipped[i] = "only stopwords: no word the attack may change"
        self._skip_by_content = {tuple(self._dataset[i][0]): r for i, r in self.skipped.items()}
        if self.skipped:
            rows = sorted(self.skipped)
            warnings.warn(
                f"{len(rows)} row(s) of the dataset will not be attacked (SkippedAttackResult): "
                + "; ".join(f"row {i}: {self.skipped[i]}" for i in rows[:5]),
                stacklevel=3,
            )

    def skip_reason(self, example: Any) -> str | None:
        values = tuple(example._text_input.values()) if hasattr(example, "_text_input") else tuple(example.values())
        return self._skip_by_content.get(values)


def text_attack_dataset(
    wrapper: FusionModelWrapper, inputs: Mapping[str, Any], labels: Any, *, shuffle: bool = False, **kwargs: Any
) -> FusionDataset:
    """A :class:`FusionDataset` over a named batch: input columns ``(text, example)``, the example key
    naming the held modalities registered in ``wrapper``. Texts and labels are checked as
    :func:`run_attack` checks them, before any attack: empty / non-string text, text holding TextAttack's
    ``<SPLIT>`` separator, text longer than the model reads (an error, or a counted skip with
    ``long_text="skip"``), and labels that are not class ids of this model (float, negative, >= classes)."""
    fusion = wrapper.model
    n = fusion.validate_inputs(inputs)
    if n == 0:
        raise InputError(f"the batch is empty (0 rows in {list(inputs)}): nothing to attack")
    checked = check_texts(fusion, inputs[wrapper.text], name=wrapper.text, long_text=wrapper.long_text, max_words=wrapper.max_words)
    ids = _dataset_labels(wrapper, inputs, labels, n)
    examples = wrapper.examples(inputs)
    rows = [(tuple(ex.values()), y) for ex, y in zip(examples, ids)]
    return FusionDataset(wrapper, rows, [ex[KEY_COLUMN] for ex in examples], checked, shuffle=shuffle, **kwargs)


def _dataset_labels(wrapper: FusionModelWrapper, inputs: Mapping[str, Any], labels: Any, n: int) -> list[int]:
    """Labels as Python ints checked against the model's classes (one forward on row 0 when the model
    declares no ``num_classes``)."""
    import numpy as np

    fusion = wrapper.model
    try:
        value = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    except (TypeError, ValueError) as err:
        raise LabelError(f"labels must be class ids, got {type(labels).__name__}: {err}") from err
    value = value.reshape(-1) if value.ndim == 0 or (value.ndim == 1) else value
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise LabelError(f"labels must be integer class ids, got dtype {value.dtype} ({value.reshape(-1)[:5].tolist()})")
    if value.ndim != 1 or len(value) != n:
        raise LabelError(f"labels must have shape ({n},) for {n} examples, got {tuple(value.shape)}")
    classes = fusion.num_classes
    if classes is None:
        row = {k: (v[:1] if isinstance(v, torch.Tensor) else list(v[:1])) for k, v in inputs.items()}
        work = working_copy(row, fusion.device, fusion.compute_dtype)
        with frozen_model_state(fusion), torch.no_grad():
            classes = int(fusion(work).shape[1])
    bad = [(i, int(v)) for i, v in enumerate(value.tolist()) if not 0 <= v < classes]
    if bad:
        raise LabelError(f"labels outside [0, {classes}): {[v for _, v in bad[:5]]} at rows {[i for i, _ in bad[:5]]}")
    return [int(v) for v in value.tolist()]


# ---------------------------------------------------------------------- attacks TextAttack builds
class _TextColumnOnly:
    """A differential-evolution transformation confined to the text column of a keyed example.

    TextAttack's DE transformations (``WordSwapInvisibleCharacters``, ``...Deletions``, ``...Reorderings``,
    ``...HomoglyphSwap``) rebuild a candidate from ``current_text.text``, which joins every column: on a
    keyed example they would edit the key and drop the columns. This applies the same transformation to
    the text column alone and puts the key back; the search is TextAttack's own."""

    def __init__(self, transformation: Any, column: str) -> None:
        self.transformation = transformation
        self.column = column

    def _text_only(self, current: Any) -> Any:
        if list(current._text_input) == [self.column, KEY_COLUMN]:
            return textattack.shared.AttackedText(current._text_input[self.column]), current._text_input[KEY_COLUMN]
        return current, None

    def get_bounds_and_precomputed(self, current_text: Any, max_perturbs: int):
        text, _ = self._text_only(current_text)
        return self.transformation.get_bounds_and_precomputed(text, max_perturbs)

    def apply_perturbation(self, current_text: Any, perturbation_vector: Any, precomputed: Any):
        text, key = self._text_only(current_text)
        out = self.transformation.apply_perturbation(text, perturbation_vector, precomputed)
        if key is None:
            return out
        return textattack.shared.AttackedText(OrderedDict([(self.column, out.text), (KEY_COLUMN, key)]))


def prepare_attack(attack: Any) -> Any:
    """Make a TextAttack ``Attack`` built on a :class:`FusionModelWrapper` safe for keyed examples (done by
    :func:`run_attack`, ``build_text_attack`` and ``textattack.Attacker`` on a :class:`FusionDataset`; call it
    yourself before looping ``attack.attack`` over ``wrapper.examples``). Today: a differential-evolution
    search (``BadCharacters2021``) perturbs the text column only. Returns the attack."""
    from textattack.search_methods import DifferentialEvolution

    wrapper = attack.goal_function.model
    search = attack.search_method
    if isinstance(wrapper, FusionModelWrapper) and isinstance(search, DifferentialEvolution):
        current = getattr(search.apply_perturbation, "__self__", None)
        if not isinstance(current, _TextColumnOnly):
            confined = _TextColumnOnly(attack.transformation, wrapper.text)
            search.apply_perturbation = confined.apply_perturbation
            search.get_bounds_and_precomputed = confined.get_bounds_and_precomputed
    return attack


def check_checkpoint(dataset: FusionDataset, checkpoint: Any) -> None:
    """Refuse to resume ``checkpoint`` on ``dataset`` unless the rows it finished are the rows at the indices
    it counts as done (TextAttack resumes by row index: on data rebuilt in another order it would attack
    some examples twice and others never)."""
    remaining = set(checkpoint.worklist) | set(checkpoint.worklist_candidates)
    offset = getattr(checkpoint.attack_args, "num_examples_offset", 0) or 0
    done = [i for i in range(offset, len(dataset)) if i not in remaining]
    want = Counter(dataset.row_fingerprint(i) for i in done)
    got = Counter()
    for result in checkpoint.attack_log_manager.results:
        original = result.original_result
        got[(*original.attacked_text._text_input.values(), original.ground_truth_output)] += 1
    if want != got:
        missing = sum((got - want).values())
        raise RowAlignmentError(
            f"this checkpoint finished {sum(got.values())} example(s), but {missing} of them are not at the row indices "
            f"it counts as done in this dataset ({len(dataset)} rows): the dataset was rebuilt in another row order "
            "(or from other data). TextAttack resumes by row index, so some examples would be attacked twice and "
            "others never. Rebuild the dataset in the order the checkpoint was made with, or start afresh"
        )


class _SkippingAttack:
    """The Attacker's view of an attack on a :class:`FusionDataset`: rows the dataset marks as skipped get a
    ``SkippedAttackResult`` (scored on the clean example, nothing searched); every other call goes to the attack."""

    def __init__(self, attack: Any, dataset: FusionDataset) -> None:
        self._attack = attack
        self._dataset = dataset

    def attack(self, example: Any, ground_truth_output: Any):
        from textattack.attack_results import SkippedAttackResult

        if not isinstance(example, textattack.shared.AttackedText):
            example = textattack.shared.AttackedText(example)
        reason = self._dataset.skip_reason(example)
        if reason is None:
            return self._attack.attack(example, ground_truth_output)
        from textattack.goal_function_results import GoalFunctionResultStatus

        goal = self._attack.goal_function
        self._attack.clear_cache()
        goal.initial_attacked_text, goal.ground_truth_output, goal.num_queries = example, ground_truth_output, 1
        raw = goal._call_model([example])[0]  # scored on the clean example; no goal score (it may divide by words)
        result = goal._goal_function_result_type()(
            example, raw, goal._get_displayed_output(raw), GoalFunctionResultStatus.SKIPPED, 0.0, 1, ground_truth_output
        )
        skipped = SkippedAttackResult(result)
        skipped.mmfusion_skip_reason = reason
        return skipped

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_attack", "_dataset"):  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self._attack, name)

    def __repr__(self) -> str:
        return repr(self._attack)

    def __str__(self) -> str:
        return str(self._attack)


def _refuse_plain_dataset(attack: Any, dataset: Any) -> None:
    """A plain ``textattack.datasets.Dataset`` of several texts on a fusion model: its rows carry no held
    example, so every text would be paired with the one example the wrapper holds, whichever caption it
    is. Refused before the first example; one row (with one held example) stays allowed."""
    model = getattr(getattr(attack, "goal_function", None), "model", None)
    try:
        n = len(dataset)
    except TypeError:
        return
    if isinstance(model, FusionModelWrapper) and n > 1:
        raise RowAlignmentError(
            f"textattack.Attacker on a plain Dataset of {n} rows with a fusion model: its rows carry no held "
            f"example, so every text would be paired with one held {list(model.held)}. Build the dataset with "
            "wrapper.dataset(batch, labels) (each row keeps its own example; for one image and many texts, "
            "repeat the image in the batch)"
        )


def _install_attacker_hooks() -> None:
    """``textattack.Attacker`` on a :class:`FusionDataset`: bind the attack to the dataset (checks, skips,
    DE confinement) and check a resumed checkpoint's row order. Any other dataset: TextAttack unchanged."""
    attacker_cls = textattack.Attacker
    if getattr(attacker_cls, "_mmfusion_hooks", False):
        return
    original_init = attacker_cls.__init__
    original_resume = attacker_cls.from_checkpoint.__func__

    def __init__(self, attack, dataset, attack_args=None):
        if isinstance(dataset, FusionDataset):
            dataset.bind_attack(attack)
        else:
            _refuse_plain_dataset(attack, dataset)
        original_init(self, attack, dataset, attack_args)
        if isinstance(dataset, FusionDataset):
            self.attack = _SkippingAttack(attack, dataset)

    def from_checkpoint(cls, attack, dataset, checkpoint):
        if isinstance(dataset, FusionDataset):
            if isinstance(checkpoint, str):
                checkpoint = textattack.shared.AttackCheckpoint.load(checkpoint)
            check_checkpoint(dataset, checkpoint)
        return original_resume(cls, attack, dataset, checkpoint)

    __init__.__doc__ = original_init.__doc__
    attacker_cls.__init__ = __init__
    attacker_cls.from_checkpoint = classmethod(from_checkpoint)
    attacker_cls._mmfusion_hooks = True


_install_attacker_hooks()


# ---------------------------------------------------------------------- run_attack support
def _stopwords(attack: Any) -> set[str]:
    from textattack.constraints.pre_transformation import StopwordModification

    words: set[str] = set()
    for c in attack.pre_transformation_constraints:
        if isinstance(c, StopwordModification):
            words |= set(c.stopwords)
    return words


def _only_stopwords(text: str, stopwords: set[str]) -> bool:
    words = textattack.shared.AttackedText(text).words
    return not words or all(w.lower() in stopwords for w in words)


def check_texts(
    fusion: FusionModel,
    texts: Sequence[Any],
    *,
    name: str = "text",
    stopwords: set[str] | None = None,
    long_text: str = "error",
    max_words: int | None = DEFAULT_MAX_WORDS,
) -> dict[str, list[int]]:
    """Rows a text attack cannot work on, by reason. Empty / non-string texts and texts holding TextAttack's
    column separator ``<SPLIT>`` raise :class:`TextInputError`; texts longer than the model's maximum
    (networks exposing ``count_tokens`` and ``max_text_tokens``) or than ``max_words`` words raise too, or
    with ``long_text="skip"`` are returned under ``"too-long"``; texts whose every word is a stopword the
    attack protects under ``"only-stopwords"``, and texts with no word at all (symbols, emoji: TextAttack's
    searches divide by the word count) under ``"no-words"`` (skipped rows are counted, not attacked)."""
    from textattack.shared import AttackedText

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TextInputError(f"modality '{name}': row {i} is {type(t).__name__}, expected str")
        if not t.strip():
            raise TextInputError(f"modality '{name}': row {i} is empty text")
        if AttackedText.SPLIT_TOKEN in t:
            raise TextInputError(
                f"modality '{name}': row {i} contains {AttackedText.SPLIT_TOKEN!r}, TextAttack's column separator: "
                "TextAttack would split the text there and crash (or edit the wrong column). Remove or escape it"
            )
    out: dict[str, list[int]] = {"only-stopwords": [], "too-long": [], "no-words": []}
    long: dict[int, str] = {}
    if max_words is not None:
        for i, t in enumerate(texts):
            if len(t.split()) > max_words:  # cheap bound first: TextAttack's words are never more than tokens
                count = len(AttackedText(t).words)
                if count > max_words:
                    long[i] = f"{count} words > max_words={max_words}"
    net = fusion.model
    limit = getattr(net, "max_text_tokens", None)
    if limit is not None and callable(getattr(net, "count_tokens", None)):
        counts = net.count_tokens(list(texts))
        for i, c in enumerate(counts):
            if c > limit and i not in long:
                long[i] = f"{c} tokens > the model's {limit}"
    if long and long_text == "skip":
        out["too-long"] = sorted(long)
    elif long:
        rows = sorted(long)
        raise TextInputError(
            f"modality '{name}': rows {rows[:10]} are longer than an attack runs on ("
            + "; ".join(long[i] for i in rows[:3])
            + "): words past the model's limit could be changed without effect, and a search over thousands of "
            "words runs for hours. Shorten them, raise the model's max_text_tokens or "
            "FusionModelWrapper(..., max_words=N), or skip them (FusionModelWrapper(..., long_text='skip'))"
        )
    for i, t in enumerate(texts):
        if i in long:
            continue
        if not AttackedText(t).words:
            out["no-words"].append(i)
        elif stopwords and _only_stopwords(t, stopwords):
            out["only-stopwords"].append(i)
    return out


class TextAttackDriver(AttackDriver):
    """Runs a TextAttack ``Attack`` built on a :class:`FusionModelWrapper`, one example at a time."""

    toolkit = "textattack"
    runs_examples = True

    def accepts(self, attack: Any) -> bool:
        return isinstance(attack, textattack.Attack)

    def wrapper(self, attack: Any) -> FusionModelWrapper:
        wrapper = attack.goal_function.model
        if not isinstance(wrapper, FusionModelWrapper):
            raise UnsupportedAttackError(
                f"textattack.{type(attack).__name__} was built on {type(wrapper).__name__}; build the recipe on "
                "FusionModelWrapper(fusion) so the held modalities stay paired with their text"
            )
        return wrapper

    def surface(self, attack: Any):
        raise UnsupportedAttackError("TextAttack attacks have no tensor attack surface")

    def generate(self, attack: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise UnsupportedAttackError("TextAttack attacks perturb text: use run_attack")

    def run(
        self,
        attack: Any,
        inputs: Mapping[str, Any],
        labels: Any = None,
        *,
        targets: Any = None,
        clean_logits: CleanLogits | None = None,
        success_fraction: float = 0.5,
    ) -> AdversarialBatch:
        from textattack.goal_functions import TargetedClassification

        wrapper = self.wrapper(attack)
        fusion, text = wrapper.model, wrapper.text
        name = f"textattack.{type(attack).__name__}"
        recipe = getattr(attack, "recipe_name", None)
        if fusion.task != "classification":
            raise UnsupportedAttackError(f"{name}: TextAttack's goal functions are for classification, the model is {fusion.task}")
        n = fusion.validate_inputs(inputs)
        if n == 0:
            raise InputError(f"the batch is empty (0 rows in {list(inputs)}): nothing to attack")
        skipped = check_texts(
            fusion, inputs[text], name=text, stopwords=_stopwords(attack), long_text=wrapper.long_text, max_words=wrapper.max_words
        )
        prepare_attack(attack)
        goal_fn = attack.goal_function
        targeted = isinstance(goal_fn, TargetedClassification) or type(goal_fn).__name__ in ("TargetedStrict", "TargetedBonus")
        towers = wrapper.uses_towers
        if towers and clean_logits is None:  # the held modalities encoded once, for the clean scores and every query
            work = working_copy(inputs, fusion.device, fusion.compute_dtype)
            keys = wrapper.register(work, validate=False)
            clean = scored_clean_pass(fusion, work, wrapper.score(work[text], keys), labels)
        else:
            clean = clean_pass(fusion, inputs, labels, clean_logits=clean_logits, validate=False)
            keys = wrapper.register(clean.work, validate=False)
        work, logits, used = clean.work, clean.logits, clean.labels
        goal_targets = None
        if targeted:
            goal_targets = torch.full_like(used, int(goal_fn.target_class))
            if targets is not None:
                given = as_class_ids(targets, fusion, logits, "targets")
                if not bool((given == goal_targets).all()):
                    raise UnsupportedAttackError(
                        f"{name} targets class {goal_fn.target_class} (fixed when the goal function was built); "
                        "build one goal function per target class"
                    )
        elif targets is not None:
            raise UnsupportedAttackError(f"{name} is untargeted: its goal function ignores targets= (build it with TargetedClassification)")

        adv_texts = list(work[text])
        queries = torch.zeros(n, dtype=torch.long)
        changed = torch.zeros(n, dtype=torch.long)
        n_words = torch.zeros(n, dtype=torch.long)
        status: list[str] = []
        skip_rows = {i: "skipped-too-long" for i in skipped["too-long"]}
        skip_rows.update({i: "skipped-no-words" for i in skipped["no-words"] if i not in skip_rows})
        skip_rows.update({i: "skipped-only-stopwords" for i in skipped["only-stopwords"] if i not in skip_rows})
        for i in range(n):
            original = textattack.shared.AttackedText(OrderedDict([(text, work[text][i]), (KEY_COLUMN, keys[i])]))
            n_words[i] = len(original.words)
            if i in skip_rows:
                status.append(skip_rows[i])
                continue
            attack.clear_cache()  # TextAttack leaves a skipped example's scores in its cache
            result = attack.attack(original, int(used[i]))
            perturbed = result.perturbed_result.attacked_text
            adv_texts[i] = perturbed._text_input[text]
            if perturbed._text_input[KEY_COLUMN] != keys[i]:  # cannot happen: the key holds no word
                raise RowAlignmentError(f"{name} changed the example key of row {i}")
            queries[i] = int(result.perturbed_result.num_queries)
            changed[i] = words_changed(original, perturbed)
            status.append(type(result).__name__.replace("AttackResult", "").lower())
        if towers:
            adv_logits = wrapper.score(adv_texts, keys)
        else:
            with frozen_model_state(fusion), torch.no_grad():
                adv_logits = fusion({**work, text: adv_texts})
        if not bool(torch.isfinite(adv_logits).all()):
            raise NonFiniteOutputError(f"the model returned NaN or infinite logits on the adversarial batch of {name}")
        adv_pred = predicted_classes(adv_logits)
        flags: list[str] = []
        for status_name, reason in (("skipped-only-stopwords", "only stopwords: no word the attack may change"),
                                    ("skipped-no-words", "no words: nothing a word-level attack can change"),
                                    ("skipped-too-long", "longer than the model reads")):
            rows = sorted(i for i, s in skip_rows.items() if s == status_name)
            if rows:
                flags.append(f"skipped: {len(rows)} row(s) not attacked ({reason}): {rows[:10]}")
        if wrapper.cache_features and wrapper.cache_off_reason is not None:
            flags.append(f"feature-cache off: {wrapper.cache_off_reason}")
        fraction = changed.float() / n_words.clamp_min(1).float()
        return build_result(
            fusion,
            clean,
            inputs,
            {text: adv_texts},
            adv_pred,
            attacked=(text,),
            toolkit=self.toolkit,
            attack_name=name if recipe is None else f"{name}[{recipe}]",
            batching="sample",
            norms={text: {"words_changed": changed, "fraction_changed": fraction}},
            budget={text: None},
            targets=goal_targets,
            flags=flags,
            extras={"queries": queries, "status": status, "words": n_words, "cached_features": wrapper.uses_towers},
            success_fraction=success_fraction,
        )


register_driver(TextAttackDriver())


def perturb_text(
    augmenter: Any,
    fusion: FusionModel,
    inputs: Mapping[str, Any],
    labels: Any = None,
    *,
    text: str | None = None,
    ids: Sequence[Any] | None = None,
) -> AdversarialBatch:
    """Apply a seeded text augmenter (:class:`~mmfusion_attacks.text.augment.SynonymSubstitution`,
    :class:`~mmfusion_attacks.text.augment.WordDeletion`, or any callable ``list[str] -> list[str]``) to the
    text of a batch, every other modality unchanged, and score the model on the result: the same
    :class:`AdversarialBatch` as an attack (random perturbations are not optimised against the model)."""
    if text is None:
        texts = [n for n, m in fusion.modalities.items() if m.kind == "text"]
        if len(texts) != 1:
            raise UnsupportedAttackError(f"the model has text modalities {texts}: pass text=")
        text = texts[0]
    if fusion.modality(text).kind != "text":
        raise UnsupportedAttackError(f"modality '{text}' is not text: a text augmenter cannot perturb it")
    clean = clean_pass(fusion, inputs, labels)
    n, work = clean.n, clean.work
    originals = list(work[text])
    if hasattr(augmenter, "details"):
        details = augmenter.details(originals, ids)
        adv_texts = [d.perturbed for d in details]
        changed = torch.tensor([d.n_changed for d in details], dtype=torch.long)
        n_words = torch.tensor([d.n_words for d in details], dtype=torch.long)
        skipped = [i for i, d in enumerate(details) if getattr(d, "skipped", None)]
    else:
        adv_texts = list(augmenter(originals))
        before = [textattack.shared.AttackedText(t) for t in originals]
        after = [textattack.shared.AttackedText(t) for t in adv_texts]
        changed = torch.tensor([words_changed(a, b) for a, b in zip(before, after)], dtype=torch.long)
        n_words = torch.tensor([len(a.words) for a in before], dtype=torch.long)
        skipped = []
    if len(adv_texts) != n or not all(isinstance(t, str) for t in adv_texts):
        raise UnsupportedAttackError(f"{type(augmenter).__name__} must return one string per text")
    with frozen_model_state(fusion), torch.no_grad():
        adv_logits = fusion({**work, text: adv_texts})
    if not bool(torch.isfinite(adv_logits).all()):
        raise NonFiniteOutputError("the model returned NaN or infinite logits on the perturbed batch")
    flags = [f"skipped: {len(skipped)} row(s) had nothing to change: {skipped[:10]}"] if skipped else []
    return build_result(
        fusion,
        clean,
        inputs,
        {text: adv_texts},
        predicted_classes(adv_logits),
        attacked=(text,),
        toolkit="textattack",
        attack_name=repr(augmenter),
        batching="batch",
        norms={text: {"words_changed": changed, "fraction_changed": changed.float() / n_words.clamp_min(1).float()}},
        budget={text: None},
        flags=flags,
        extras={"queries": torch.zeros(n, dtype=torch.long), "words": n_words},
        warn=False,  # random perturbations are not optimised: an unchanged text is flagged, not warned about
    )
