"""TextAttack recipes by name, with their resources checked before anything is built or downloaded.

``build_text_attack("pwws", model_wrapper, query_budget=200)`` returns a ``textattack.Attack``.
Every TextAttack 0.3.11 recipe is registered under the name TextAttack's own CLI uses
(``textattack attack --recipe NAME``), plus ``french`` / ``spanish`` / ``chinese``. Each names the
resources it needs; a missing one raises :class:`MissingResourceError` naming it and how to get it,
in milliseconds, *before* TextAttack would try to download it (S3, tensorflow_hub, the Hugging Face
hub, flair, nltk). Pass ``check_resources=False`` to let TextAttack download them itself on a
machine with internet.

Offline with this project's resources (stopwords; WordNet from Debian): ``deepwordbug``, ``pruthi``,
``input-reduction``, ``bad-characters`` (non-homoglyph perturbations), and with WordNet ``pwws``
and ``leap``. :func:`list_text_attacks` shows every entry; :func:`register_text_attack` adds yours.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingResourceError
from ..extras import ensure
from .resources import (
    GET_RESOURCES_HINT,
    find_nltk_resource,
    import_textattack,
    prepare_text_resources,
    require_stopwords,
    require_wordnet,
    textattack_cache_dir,
)

__all__ = [
    "TextAttackEntry",
    "ResourceNeed",
    "build_text_attack",
    "list_text_attacks",
    "register_text_attack",
    "register_resource",
    "check_text_attack_resources",
    "get_text_attack",
    "RESOURCES",
]


# ----------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class ResourceNeed:
    """A resource a recipe needs: ``check()`` is True when it is present locally (never downloads);
    ``offline_source``: this project can provide it without internet."""

    id: str
    description: str
    check: Callable[[], bool]
    how: str
    offline_source: bool = False


def _ta_cached(folder: str) -> Callable[[], bool]:
    return lambda: (textattack_cache_dir() / folder).exists()


def _embeddings_present() -> bool:
    import sys

    ta = sys.modules.get("textattack")
    if ta is not None and "textattack_counterfitted_GLOVE_embedding" in ta.shared.utils.GLOBAL_OBJECTS:
        return True
    return (textattack_cache_dir() / "word_embeddings" / "paragramcf").exists()


def _hf_cached(repo: str, filename: str = "config.json") -> Callable[[], bool]:
    def check() -> bool:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        return isinstance(try_to_load_from_cache(repo, filename), str)

    return check


def _tfhub_cached(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            importlib.import_module("tensorflow_hub")
        except ImportError:
            return False
        folder = hashlib.sha1(url.encode("utf8")).hexdigest()
        roots = [os.environ.get("TFHUB_CACHE_DIR"), os.environ.get("TA_CACHE_DIR"), str(textattack_cache_dir())]
        return any(r and (Path(r) / folder).is_dir() for r in roots)

    return check


def _nltk_present(*resources: str) -> Callable[[], bool]:
    return lambda: all(find_nltk_resource(r) is not None for r in resources)


def _stopwords_ok() -> bool:
    return prepare_text_resources(optional=False).stopwords.available


def _wordnet_ok() -> bool:
    return prepare_text_resources(optional=False).wordnet.available


def _homoglyphs_present() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("textattack")
    if spec is None or not spec.submodule_search_locations:
        return False
    return (Path(next(iter(spec.submodule_search_locations))) / "shared" / "intentional_homoglyphs.txt").is_file()


def _module(name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    return check


#: named in the error raised without the 'text' extra
_FEATURE = "TextAttack recipes"

_WITH_INTERNET = "on a machine with internet (or copy TextAttack's cache folder, TA_CACHE_DIR, from one)"

#: resource id -> how to check and get it
RESOURCES: dict[str, ResourceNeed] = {}


def register_resource(need: ResourceNeed) -> ResourceNeed:
    """Add (or replace) a resource your own recipes can name in ``needs``."""
    RESOURCES[need.id] = need
    return need


for _need in (
    ResourceNeed("stopwords", "nltk stopwords corpus (corpora/stopwords/english)", _stopwords_ok, GET_RESOURCES_HINT, True),
    ResourceNeed("wordnet", "nltk WordNet 3.0 corpus (corpora/wordnet)", _wordnet_ok, GET_RESOURCES_HINT, True),
    ResourceNeed(
        "counterfitted-embeddings",
        "counter-fitted GloVe embeddings (paragramcf, downloaded by TextAttack from S3 into TA_CACHE_DIR/word_embeddings)",
        _embeddings_present,
        "build once " + _WITH_INTERNET + ", or place a local textattack.shared.WordEmbedding (with nn_matrix) in "
        "textattack.shared.utils.GLOBAL_OBJECTS['textattack_counterfitted_GLOVE_embedding'] before building",
    ),
    ResourceNeed(
        "universal-sentence-encoder",
        "Universal Sentence Encoder (tensorflow_hub, https://tfhub.dev/google/universal-sentence-encoder/3)",
        _tfhub_cached("https://tfhub.dev/google/universal-sentence-encoder/3"),
        "pip install tensorflow tensorflow_hub and load the model once " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "nltk-pos-tagger",
        "nltk POS tagger (taggers/averaged_perceptron_tagger_eng + taggers/universal_tagset)",
        _nltk_present("taggers/averaged_perceptron_tagger_eng", "taggers/universal_tagset"),
        "`mmfusion-attacks text-resources --download` or `python -m nltk.downloader averaged_perceptron_tagger_eng "
        "universal_tagset` " + _WITH_INTERNET + " (no offline source)",
    ),
    ResourceNeed(
        "hf:bert-base-uncased",
        "masked language model bert-base-uncased (Hugging Face hub)",
        _hf_cached("bert-base-uncased"),
        "`huggingface-cli download bert-base-uncased` " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "hf:distilroberta-base",
        "masked language model distilroberta-base (Hugging Face hub)",
        _hf_cached("distilroberta-base"),
        "`huggingface-cli download distilroberta-base` " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "hf:xlm-roberta-base",
        "masked language model xlm-roberta-base (Hugging Face hub)",
        _hf_cached("xlm-roberta-base"),
        "`huggingface-cli download xlm-roberta-base` " + _WITH_INTERNET,
    ),
    ResourceNeed("hf:gpt2", "GPT-2 language model (Hugging Face hub: gpt2)", _hf_cached("gpt2"), "`huggingface-cli download gpt2` " + _WITH_INTERNET),
    ResourceNeed(
        "sbert:stsb-distilbert-base",
        "sentence-transformers model stsb-distilbert-base (Hugging Face hub)",
        _hf_cached("sentence-transformers/stsb-distilbert-base"),
        "`huggingface-cli download sentence-transformers/stsb-distilbert-base` " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "hownet",
        "HowNet synonym bank (TextAttack S3: transformations/hownet)",
        _ta_cached("transformations/hownet/word_candidates_sense.pkl"),
        "build PSO once " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "openhownet",
        "OpenHowNet package and its data (pip install OpenHowNet; OpenHowNet.download())",
        lambda: _module("OpenHowNet")() and (Path.home() / ".OpenHowNet").exists(),
        "pip install OpenHowNet, then python -c 'import OpenHowNet; OpenHowNet.download()' " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "google-1b-lm",
        "Google 1-billion-words language model (TextAttack S3: constraints/semantics/language-models/alzantot-goog-lm)",
        _ta_cached("constraints/semantics/language-models/alzantot-goog-lm"),
        "build the recipe once " + _WITH_INTERNET + "; it also needs tensorflow",
    ),
    ResourceNeed(
        "learning-to-write-lm",
        "learning-to-write language model (TextAttack S3: constraints/grammaticality/language-models/learning-to-write)",
        _ta_cached("constraints/grammaticality/language-models/learning-to-write"),
        "build the recipe once " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "flair-ner",
        "flair NER tagger ('ner' = flair/ner-english, Hugging Face hub)",
        _hf_cached("flair/ner-english", "pytorch_model.bin"),
        "python -c \"from flair.models import SequenceTagger; SequenceTagger.load('ner')\" " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "flair-ner-multi",
        "flair multilingual / French NER taggers (flair/ner-multi-fast, flair/ner-french)",
        lambda: _hf_cached("flair/ner-multi-fast", "pytorch_model.bin")() and _hf_cached("flair/ner-french", "pytorch_model.bin")(),
        "SequenceTagger.load('flair/ner-multi-fast') and ('flair/ner-french') " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "flair-upos",
        "flair POS tagger upos-fast (flair/upos-english-fast, Hugging Face hub)",
        _hf_cached("flair/upos-english-fast", "pytorch_model.bin"),
        "python -c \"from flair.models import SequenceTagger; SequenceTagger.load('upos-fast')\" " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "omw-1.4",
        "Open Multilingual WordNet (nltk corpora/omw-1.4) for French / Spanish WordNet",
        _nltk_present("corpora/omw-1.4"),
        "`python -m nltk.downloader omw-1.4` " + _WITH_INTERNET,
    ),
    ResourceNeed(
        "homoglyph-list",
        "TextAttack's shared/intentional_homoglyphs.txt (missing from the textattack 0.3.11 wheel)",
        _homoglyphs_present,
        "install a TextAttack release that ships textattack/shared/intentional_homoglyphs.txt (or from its git "
        "repository); for bad-characters pick perturbation_type='invisible', 'deletions' or 'reorderings'",
    ),
):
    register_resource(_need)


# ------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class TextAttackEntry:
    """One attack: ``target`` is a dotted path to an ``AttackRecipe`` (its ``build``), or a callable
    ``(model_wrapper, **options) -> textattack.Attack``. ``needs`` are resource ids (see ``RESOURCES``)
    or a callable ``(options) -> ids`` when they depend on the options."""

    name: str
    target: str | Callable[..., Any]
    needs: tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]] = ()
    notes: str = ""

    @property
    def class_name(self) -> str:
        if isinstance(self.target, str):
            return self.target.rsplit(".", 1)[-1]
        return getattr(self.target, "__qualname__", repr(self.target))

    def needs_for(self, options: dict[str, Any] | None = None) -> tuple[str, ...]:
        needs = self.needs(dict(options or {})) if callable(self.needs) else self.needs
        return ("stopwords", *(n for n in needs if n != "stopwords"))

    @property
    def offline(self) -> bool:
        """True when every resource (with default options) can be prepared without internet."""
        return all(RESOURCES[n].offline_source if n in RESOURCES else False for n in self.needs_for())


_REGISTRY: dict[str, TextAttackEntry] = {}


def register_text_attack(
    name: str,
    target: str | Callable[..., Any],
    *,
    needs: tuple[str, ...] | list[str] | Callable[[dict[str, Any]], tuple[str, ...]] = (),
    notes: str = "",
    overwrite: bool = False,
) -> TextAttackEntry:
    """Register an attack under ``name``: ``target`` is an ``AttackRecipe`` subclass, a dotted path
    to one, or a callable ``(model_wrapper, **options) -> textattack.Attack``; ``needs`` names
    resources in ``RESOURCES`` (add your own with :func:`register_resource`)."""
    key = name.strip().lower()
    if not key:
        raise ValueError("register_text_attack: empty name")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"register_text_attack: {name!r} is already registered (pass overwrite=True to replace it)")
    if isinstance(target, type) and hasattr(target, "build"):
        target = target.build
    if not (isinstance(target, str) or callable(target)):
        raise TypeError(f"register_text_attack: target for {name!r} must be a dotted path or a callable, got {target!r}")
    if not callable(needs):
        needs = tuple(needs)
        unknown = [n for n in needs if n not in RESOURCES]
        if unknown:
            raise ValueError(f"register_text_attack: {name!r} needs unknown resources {unknown}; known: {sorted(RESOURCES)}")
    entry = TextAttackEntry(key, target, needs, notes)
    _REGISTRY[key] = entry
    return entry


#: BadCharacters2021's goal functions (TextAttack 0.3.11) and perturbation types
BAD_CHARACTERS_GOALS = (
    "targeted_classification",
    "targeted_strict",
    "targeted_bonus",
    "logit_sum",
    "named_entity_recognition",
    "minimize_bleu",
    "maximize_levenshtein",
)
BAD_CHARACTERS_PERTURBATIONS = ("homoglyphs", "invisible", "deletions", "reorderings")


def _check_bad_characters(options: dict[str, Any]) -> None:
    """TextAttack answers a wrong value with a bare 'Invalid goal_function_type!': name the valid ones."""
    goal = options.get("goal_function_type")
    if goal is None:
        raise ValueError(
            f"text attack 'bad-characters' needs goal_function_type=, one of {list(BAD_CHARACTERS_GOALS)} "
            "(classifiers: 'targeted_classification' with target_class=, 'targeted_strict', 'targeted_bonus', 'logit_sum')"
        )
    if goal not in BAD_CHARACTERS_GOALS:
        raise ValueError(f"text attack 'bad-characters': goal_function_type={goal!r} is not one of {list(BAD_CHARACTERS_GOALS)}")
    kind = options.get("perturbation_type")
    if kind is not None and kind not in BAD_CHARACTERS_PERTURBATIONS:
        raise ValueError(
            f"text attack 'bad-characters': perturbation_type={kind!r} is not one of {list(BAD_CHARACTERS_PERTURBATIONS)}"
        )


def _bad_characters_needs(options: dict[str, Any]) -> tuple[str, ...]:
    kind = options.get("perturbation_type")
    return ("homoglyph-list",) if kind in (None, "homoglyphs") else ()


def _a2t_needs(options: dict[str, Any]) -> tuple[str, ...]:
    base = ("counterfitted-embeddings", "nltk-pos-tagger", "sbert:stsb-distilbert-base")
    return (*base, "hf:bert-base-uncased") if options.get("mlm") else base


_R = "textattack.attack_recipes."
for _name, _cls, _needs, _notes in (
    ("deepwordbug", "DeepWordBugGao2018", (), "character edits"),
    ("pruthi", "Pruthi2019", (), "character edits (typos); option max_num_word_swaps"),
    ("input-reduction", "InputReductionFeng2018", (), "deletes words while the prediction holds"),
    ("pwws", "PWWSRen2019", ("wordnet",), "WordNet synonyms, weighted saliency"),
    ("leap", "LEAP2023", ("wordnet",), "WordNet synonyms, particle swarm"),
    ("bad-characters", "BadCharacters2021", _bad_characters_needs,
     "imperceptible Unicode; options goal_function_type (required), perturbation_type (default homoglyphs)"),
    ("textfooler", "TextFoolerJin2019", ("counterfitted-embeddings", "nltk-pos-tagger", "universal-sentence-encoder"), ""),
    ("alzantot", "GeneticAlgorithmAlzantot2018", ("counterfitted-embeddings", "google-1b-lm"), ""),
    ("faster-alzantot", "FasterGeneticAlgorithmJia2019", ("counterfitted-embeddings", "learning-to-write-lm"), ""),
    ("iga", "IGAWang2019", ("counterfitted-embeddings",), ""),
    ("kuleshov", "Kuleshov2017", ("counterfitted-embeddings", "hf:gpt2"), ""),
    ("hotflip", "HotFlipEbrahimi2017", ("counterfitted-embeddings", "nltk-pos-tagger"), "white-box: the wrapper needs get_grad"),
    ("seq2sick", "Seq2SickCheng2018BlackBox", ("counterfitted-embeddings",), "sequence-to-sequence models"),
    ("pso", "PSOZang2020", ("hownet",), ""),
    ("bae", "BAEGarg2019", ("hf:bert-base-uncased", "nltk-pos-tagger", "universal-sentence-encoder"), ""),
    ("bert-attack", "BERTAttackLi2020", ("hf:bert-base-uncased", "universal-sentence-encoder"), ""),
    ("clare", "CLARE2020", ("hf:distilroberta-base", "universal-sentence-encoder"), ""),
    ("a2t", "A2TYoo2021", _a2t_needs, "option mlm=True adds bert-base-uncased; needs a Hugging Face model wrapper"),
    ("checklist", "CheckList2020", ("flair-ner",), ""),
    ("morpheus", "MorpheusTan2020", ("flair-upos",), "sequence-to-sequence models (BLEU goal)"),
    ("textbugger", "TextBuggerLi2018", ("homoglyph-list", "counterfitted-embeddings", "universal-sentence-encoder"),
     "broken in the 0.3.11 wheel (homoglyph list missing)"),
    ("french", "FrenchRecipe", ("omw-1.4", "wordnet", "flair-ner-multi"), ""),
    ("spanish", "SpanishRecipe", ("omw-1.4", "wordnet", "flair-ner-multi"), ""),
    ("chinese", "ChineseRecipe", ("openhownet", "hf:xlm-roberta-base"), ""),
):
    register_text_attack(_name, _R + _cls, needs=_needs, notes=_notes)



def get_text_attack(name: str) -> TextAttackEntry:
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown text attack {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_text_attacks(*, check: bool = False) -> list[dict[str, Any]]:
    """One row per attack: name, class, offline (can run with resources this project prepares without
    internet), needs, notes; with ``check=True`` also ``missing`` (resources absent now)."""
    rows = []
    for entry in sorted(_REGISTRY.values(), key=lambda e: (not e.offline, e.name)):
        row = {"name": entry.name, "class": entry.class_name, "offline": entry.offline, "needs": list(entry.needs_for()), "notes": entry.notes}
        if check:
            row["missing"] = [n for n in entry.needs_for() if n not in RESOURCES or not RESOURCES[n].check()]
        rows.append(row)
    return rows


def check_text_attack_resources(name: str, **options: Any) -> None:
    """Raise :class:`MissingResourceError` for the first missing resource of attack ``name`` (with
    these options); never downloads. Stopwords and WordNet are prepared from local sources first."""
    entry = get_text_attack(name)
    ensure("textattack", feature=_FEATURE)
    needs = entry.needs_for(options)
    missing = []
    for n in needs:  # cheap file / cache look-ups first
        if n in ("stopwords", "wordnet"):
            continue
        need = RESOURCES.get(n)
        if need is None:
            missing.append(f"{n} (unknown resource id)")
        elif not need.check():
            missing.append(f"{need.description}: {need.how}")
    if missing:
        raise MissingResourceError(
            f"text attack {entry.name!r} ({entry.class_name}) needs resources that are not available offline: "
            + "; ".join(missing)
            + ". Nothing was downloaded; pass check_resources=False to let TextAttack download them itself on a machine with internet."
        )
    require_stopwords()
    if "wordnet" in needs:
        require_wordnet()  # loads WordNet (a few seconds the first time)


@contextlib.contextmanager
def _no_nltk_downloads() -> Iterator[None]:
    """While a checked recipe is built, ``nltk.download`` is a no-op returning False: everything it
    needs was checked to be local, so any download TextAttack tries is optional (omw-1.4)."""
    import nltk

    original = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = original


def _resolve_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.rpartition(".")
    obj = getattr(importlib.import_module(module), attr)
    return obj.build if hasattr(obj, "build") else obj


def build_text_attack(name: str, model_wrapper: Any, *, query_budget: int | None = None, check_resources: bool = True, **options: Any):
    """The ``textattack.Attack`` registered as ``name`` (e.g. ``"deepwordbug"``, ``"pwws"``), built on
    ``model_wrapper`` with ``options`` passed to the recipe's ``build``. Resources are checked first
    (:class:`MissingResourceError`, no download); ``query_budget`` caps the model queries per example
    (the goal function's ``query_budget``)."""
    entry = get_text_attack(name)
    if query_budget is not None and (isinstance(query_budget, bool) or not isinstance(query_budget, int) or query_budget < 1):
        raise ValueError(f"build_text_attack({name!r}): query_budget must be a positive int, got {query_budget!r}")
    if entry.name == "bad-characters":
        _check_bad_characters(options)
    ensure("textattack", feature=_FEATURE)
    if check_resources:
        check_text_attack_resources(entry.name, **options)
    import_textattack(feature=_FEATURE)
    build = _resolve_target(entry.target)
    if check_resources:
        with _no_nltk_downloads():  # e.g. WordSwapWordNet's nltk.download("omw-1.4") on every construction
            attack = build(model_wrapper, **options)
    else:
        attack = build(model_wrapper, **options)
    if query_budget is not None:
        attack.goal_function.query_budget = query_budget
    if type(getattr(attack.goal_function, "model", None)).__name__ == "FusionModelWrapper":
        from ..adapters.textattack import (
            prepare_attack,  # keyed examples: confine the search to the text column
        )

        prepare_attack(attack)
    return attack
