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

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmfusion_attacks.errors import (
    InputError,
    NonFiniteOutputError,
    NoPerturbationWarning,
    RowAlignmentError,
    TextInputError,
    UnsupportedAttackError,
)
from mmfusion_attacks.fusion import FusionModel
from mmfusion_attacks.runner import (
    AdversarialBatch,
    AttackDriver,
    CleanLogits,
    _as_class_ids,
    _fingerprint,
    _success,
    _working_copy,
    register_driver,
)
from mmfusion_attacks.surface import frozen_model_state
from mmfusion_attacks.text.resources import import_textattack

textattack = import_textattack()
from textattack.goal_functions import UntargetedClassification  # noqa: E402
from textattack.models.wrappers import ModelWrapper  # noqa: E402
from textattack.shared import validators as _validators  # noqa: E402

# A FusionModel returns class logits: tell TextAttack's goal-function check so (else it logs
# "Unknown if model ... compatible" for every recipe built).
_CLASSIFIERS = _validators.MODELS_BY_GOAL_FUNCTION[UntargetedClassification]  # shared by the classification goals
if r"^mmfusion_attacks\.fusion\.FusionModel$" not in _CLASSIFIERS:
    _CLASSIFIERS.append(r"^mmfusion_attacks\.fusion\.FusionModel$")

__all__ = ["FusionModelWrapper", "TextAttackDriver", "KEY_COLUMN", "text_attack_dataset", "words_changed", "perturb_text", "check_texts"]

#: name of the column that carries an example's key in TextAttack inputs
KEY_COLUMN = "example"
# 16 symbols TextAttack's word splitter never treats as (part of) a word
_KEY_SYMBOLS = "!#$%&+,.:;<=>?^|"


def _key_from_digest(digest: bytes) -> str:
    return "".join(_KEY_SYMBOLS[b >> 4] + _KEY_SYMBOLS[b & 15] for b in digest[:8])


def words_changed(original: Any, perturbed: Any) -> int:
    """Number of word positions that differ between two ``AttackedText`` (deleted words count too)."""
    diff = original.all_words_diff(perturbed)
    return len(diff) + max(0, len(original.words) - len(perturbed.words))


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
        long_text: texts longer than the model reads (networks with ``count_tokens`` / ``max_text_tokens``):
            ``"error"`` (a :class:`TextInputError` before any work) or ``"skip"`` (not attacked; counted in
            the result's flags), since words past the limit could be "changed" without effect.
    """

    def __init__(
        self,
        fusion: FusionModel,
        text: str | None = None,
        *,
        batch_size: int = 32,
        cache_features: bool = True,
        long_text: str = "error",
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
        self.long_text = long_text
        self.model = fusion
        self.text = text
        self.held = tuple(n for n in fusion.modalities if n != text)
        self.batch_size = batch_size
        self.cache_features = cache_features
        self._examples: dict[str, dict[str, Any]] = {}
        self._features: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._feature_stamp: tuple | None = None
        self.feature_cache_size = 1024
        #: rows and forward calls seen (for reports and tests)
        self.rows_queried = 0
        self.calls = 0

    # ------------------------------------------------------------------ examples
    @property
    def uses_towers(self) -> bool:
        towers = self.model.towers
        return bool(self.cache_features and self.text in towers and all(n in towers for n in self.held))

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
                h.update(repr(_fingerprint({name: row[name]})).encode())
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
        outs = []
        with frozen_model_state(self.model), torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                outs.append(self._forward(rows[start : start + self.batch_size]))
        self.rows_queried += len(rows)
        logits = torch.cat(outs)
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutputError("the model returned NaN or infinite logits on a TextAttack query")
        return logits.float().cpu()

    def _forward(self, rows: list[tuple[str, str]]) -> torch.Tensor:
        self.calls += 1
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

    def _held_features(self, key: str) -> dict[str, torch.Tensor]:
        stamp = tuple((id(p), p._version) for p in self.model.parameters())
        if stamp != self._feature_stamp:  # the model changed (training, loading): recompute
            self._features.clear()
            self._feature_stamp = stamp
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        held = self.held_for(key)
        device = self.model.device
        feats = {
            name: self.model.encode(name, v.to(device) if isinstance(v, torch.Tensor) else v) for name, v in held.items()
        }
        self._features[key] = feats
        while len(self._features) > self.feature_cache_size:
            self._features.popitem(last=False)
        return feats

    def _tokenize(self, inputs: Sequence[Any]) -> list[list[str]]:
        return [self._split(i)[0].split() if not isinstance(i, str) else i.split() for i in inputs]

    def __repr__(self) -> str:
        return f"FusionModelWrapper(text='{self.text}', held={list(self.held)}, towers={self.uses_towers})"


def _row(value: Any, i: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[i : i + 1]
    return [value[i]]


def text_attack_dataset(wrapper: FusionModelWrapper, inputs: Mapping[str, Any], labels: Any, *, shuffle: bool = False):
    """``textattack.datasets.Dataset`` over a named batch: input columns ``(text, example)``, the example key
    naming the held modalities registered in ``wrapper``."""
    examples = wrapper.examples(inputs)
    ids = torch.as_tensor(labels).reshape(-1).tolist() if not isinstance(labels, list) else list(labels)
    if len(ids) != len(examples):
        raise InputError(f"{len(ids)} labels for {len(examples)} examples")
    rows = [(tuple(ex.values()), int(y)) for ex, y in zip(examples, ids)]
    return textattack.datasets.Dataset(rows, input_columns=[wrapper.text, KEY_COLUMN], shuffle=shuffle)


# ---------------------------------------------------------------------- run_attack support
def _stopwords(attack: Any) -> set[str]:
    from textattack.constraints.pre_transformation import StopwordModification

    words: set[str] = set()
    for c in attack.pre_transformation_constraints:
        if isinstance(c, StopwordModification):
            words |= set(c.stopwords)
    return words


def check_texts(
    fusion: FusionModel, texts: Sequence[Any], *, name: str = "text", stopwords: set[str] | None = None, long_text: str = "error"
) -> dict[str, list[int]]:
    """Rows a text attack cannot work on, by reason. Empty / non-string texts raise
    :class:`TextInputError`; texts longer than the model's maximum (networks exposing ``count_tokens``
    and ``max_text_tokens``) raise too, or with ``long_text="skip"`` are returned under ``"too-long"``;
    texts whose every word is a stopword the attack protects are returned under ``"only-stopwords"``
    (skipped rows are counted, not attacked)."""
    from textattack.shared import AttackedText

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TextInputError(f"modality '{name}': row {i} is {type(t).__name__}, expected str")
        if not t.strip():
            raise TextInputError(f"modality '{name}': row {i} is empty text")
    out: dict[str, list[int]] = {"only-stopwords": [], "too-long": []}
    net = fusion.model
    limit = getattr(net, "max_text_tokens", None)
    if limit is not None and callable(getattr(net, "count_tokens", None)):
        counts = net.count_tokens(list(texts))
        long = [i for i, c in enumerate(counts) if c > limit]
        if long and long_text == "skip":
            out["too-long"] = long
        elif long:
            raise TextInputError(
                f"modality '{name}': rows {long[:10]} have more tokens ({[counts[i] for i in long[:10]]}) than the "
                f"model reads ({limit}); words past the limit could be changed without effect. Shorten them or "
                "raise the model's max_text_tokens (or FusionModelWrapper(..., long_text='skip'))"
            )
    if stopwords:
        for i, t in enumerate(texts):
            words = AttackedText(t).words
            if not words or all(w.lower() in stopwords for w in words):
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
        skipped = check_texts(fusion, inputs[text], name=text, stopwords=_stopwords(attack), long_text=wrapper.long_text)
        work = _working_copy(inputs, fusion.device, fusion.compute_dtype)
        goal_fn = attack.goal_function
        targeted = isinstance(goal_fn, TargetedClassification)
        with frozen_model_state(fusion):
            if clean_logits is None:
                with torch.no_grad():
                    logits = fusion(work)
            elif not isinstance(clean_logits, CleanLogits):
                raise TypeError("clean_logits must come from clean_forward(fusion, inputs)")
            elif clean_logits.fingerprint != _fingerprint(work):
                raise ValueError("clean_logits were computed on another batch than `inputs`")
            else:
                logits = clean_logits.logits
        logits = logits.detach()
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutputError("the model returned NaN or infinite logits on the clean batch")
        clean_pred = logits.argmax(1)
        if labels is None:
            used, source = clean_pred.clone(), "clean-prediction"
        else:
            used, source = _as_class_ids(labels, fusion, logits, "labels"), "given"
        goal_targets = None
        if targeted:
            goal_targets = torch.full_like(used, int(goal_fn.target_class))
            if targets is not None:
                given = _as_class_ids(targets, fusion, logits, "targets")
                if not bool((given == goal_targets).all()):
                    raise UnsupportedAttackError(
                        f"{name} targets class {goal_fn.target_class} (fixed when the goal function was built); "
                        "build one goal function per target class"
                    )
        elif targets is not None:
            raise UnsupportedAttackError(f"{name} is untargeted: its goal function ignores targets= (build it with TargetedClassification)")

        keys = wrapper.register(work, validate=False)
        adv_texts = list(work[text])
        queries = torch.zeros(n, dtype=torch.long)
        changed = torch.zeros(n, dtype=torch.long)
        n_words = torch.zeros(n, dtype=torch.long)
        status: list[str] = []
        skip_rows = {i: "skipped-too-long" for i in skipped["too-long"]}
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
        adv_batch = {**work, text: adv_texts}
        with frozen_model_state(fusion), torch.no_grad():
            adv_logits = fusion(adv_batch)
        if not bool(torch.isfinite(adv_logits).all()):
            raise NonFiniteOutputError(f"the model returned NaN or infinite logits on the adversarial batch of {name}")
        adv_pred = adv_logits.argmax(1)
        score, success = _success("classification", adv_pred, used, goal_targets, None, success_fraction)
        result_inputs: dict[str, Any] = {}
        for key, value in inputs.items():
            if key == text:
                result_inputs[key] = adv_texts
            else:
                result_inputs[key] = value.detach().clone() if isinstance(value, torch.Tensor) else list(value)
        flags: list[str] = []
        for status_name, reason in (("skipped-only-stopwords", "only stopwords: no word the attack may change"),
                                    ("skipped-too-long", "longer than the model reads")):
            rows = sorted(i for i, s in skip_rows.items() if s == status_name)
            if rows:
                flags.append(f"skipped: {len(rows)} row(s) not attacked ({reason}): {rows[:10]}")
        _, clean_success = _success("classification", clean_pred, used, goal_targets, None, success_fraction)
        if not any(a != b for a, b in zip(adv_texts, inputs[text])) and not bool(clean_success.all()):
            flags.append(f"no-perturbation: {name} returned every text unchanged although the model was not fooled")
            warnings.warn(
                f"{name} changed no text although {int((~clean_success).sum())} of {n} row(s) were not already fooled",
                NoPerturbationWarning,
                stacklevel=3,
            )
        fraction = changed.float() / n_words.clamp_min(1).float()
        return AdversarialBatch(
            inputs=result_inputs,
            attacked=(text,),
            labels=used,
            labels_source=source,
            targets=goal_targets,
            clean_pred=clean_pred,
            adv_pred=adv_pred,
            score=score,
            success=success,
            norms={text: {"words_changed": changed, "fraction_changed": fraction}},
            batching="sample",
            toolkit=self.toolkit,
            attack_name=name if recipe is None else f"{name}[{recipe}]",
            budget={text: None},
            flags=flags,
            extras={"queries": queries, "status": status, "words": n_words, "cached_features": wrapper.uses_towers},
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
    n = fusion.validate_inputs(inputs)
    if n == 0:
        raise InputError(f"the batch is empty (0 rows in {list(inputs)})")
    work = _working_copy(inputs, fusion.device, fusion.compute_dtype)
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
        logits = fusion(work)
        adv_logits = fusion({**work, text: adv_texts})
    for what, value in (("clean", logits), ("perturbed", adv_logits)):
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteOutputError(f"the model returned NaN or infinite logits on the {what} batch")
    clean_pred, adv_pred = logits.argmax(1), adv_logits.argmax(1)
    if labels is None:
        used, source = clean_pred.clone(), "clean-prediction"
    else:
        used, source = _as_class_ids(labels, fusion, logits, "labels"), "given"
    score, success = _success("classification", adv_pred, used, None, None, 0.5)
    result_inputs = {
        k: (adv_texts if k == text else (v.detach().clone() if isinstance(v, torch.Tensor) else list(v))) for k, v in inputs.items()
    }
    flags = [f"skipped: {len(skipped)} row(s) had nothing to change: {skipped[:10]}"] if skipped else []
    return AdversarialBatch(
        inputs=result_inputs,
        attacked=(text,),
        labels=used,
        labels_source=source,
        targets=None,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        score=score,
        success=success,
        norms={text: {"words_changed": changed, "fraction_changed": changed.float() / n_words.clamp_min(1).float()}},
        batching="batch",
        toolkit="textattack",
        attack_name=repr(augmenter),
        budget={text: None},
        flags=flags,
        extras={"queries": torch.zeros(n, dtype=torch.long), "words": n_words},
    )
