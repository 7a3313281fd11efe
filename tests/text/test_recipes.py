"""Recipe registry: offline recipes build and run on a tiny wrapper; the others fail fast, offline."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from mmfusion_attacks.errors import MissingResourceError

VOCAB = ["movie", "film", "good", "great", "happy", "fine", "bad", "awful", "sad", "boring", "plot", "actor"]
POSITIVE = "the movie was good and the actor was great"


@pytest.fixture(scope="module")
def recipes(textattack_module):
    from mmfusion_attacks.text import recipes

    return recipes


class BagOfWords(nn.Module):
    """Counts of VOCAB words -> 2 logits; hand-set so good/great/happy/fine are positive."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(len(VOCAB), 2)
        with torch.no_grad():
            w = torch.tensor([0, 0, 1, 1, 1, 1, -1, -1, -1, -1, 0, 0], dtype=torch.float32)
            self.linear.weight.copy_(torch.stack([-w, w]))
            self.linear.bias.zero_()

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return self.linear(counts)


@pytest.fixture(scope="module")
def wrapper(textattack_module):
    from textattack.models.wrappers import ModelWrapper

    class BagOfWordsWrapper(ModelWrapper):
        def __init__(self, model: nn.Module) -> None:
            self.model = model
            self.calls = 0

        def __call__(self, texts: list[str]) -> np.ndarray:
            self.calls += 1
            counts = torch.zeros(len(texts), len(VOCAB))
            for i, text in enumerate(texts):
                for word in text.lower().split():
                    word = word.strip(".,!?")
                    if word in VOCAB:
                        counts[i, VOCAB.index(word)] += 1
            with torch.no_grad():
                return self.model(counts).numpy()

    return BagOfWordsWrapper(BagOfWords().eval())


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails and is recorded."""
    attempts: list[str] = []

    def connect(self, address):
        attempts.append(repr(address))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connect(None, address))
    return attempts


def test_list_covers_every_textattack_recipe(recipes, textattack_module):
    from textattack.attack_args import ATTACK_RECIPE_NAMES

    rows = {r["name"]: r for r in recipes.list_text_attacks()}
    assert set(ATTACK_RECIPE_NAMES) <= set(rows)
    for name, path in ATTACK_RECIPE_NAMES.items():
        assert path.endswith("." + rows[name]["class"])
    builtin = set(ATTACK_RECIPE_NAMES) | {"french", "spanish", "chinese"}
    offline = {n for n, r in rows.items() if r["offline"] and n in builtin}
    assert offline == {"deepwordbug", "pruthi", "input-reduction", "pwws", "leap"}
    assert rows["pwws"]["needs"] == ["stopwords", "wordnet"]
    assert "universal-sentence-encoder" in rows["textfooler"]["needs"]
    assert "homoglyph-list" in rows["textbugger"]["needs"]
    checked = {r["name"]: r["missing"] for r in recipes.list_text_attacks(check=True)}
    assert checked["deepwordbug"] == []


DOWNLOADING = {
    "textfooler": "counter-fitted GloVe embeddings",
    "bae": "bert-base-uncased",
    "bert-attack": "bert-base-uncased",
    "alzantot": "counter-fitted GloVe embeddings",
    "faster-alzantot": "learning-to-write",
    "iga": "counter-fitted GloVe embeddings",
    "kuleshov": "GPT-2",
    "pso": "HowNet",
    "clare": "distilroberta-base",
    "checklist": "flair NER",
    "a2t": "stsb-distilbert-base",
    "hotflip": "nltk POS tagger",
    "textbugger": "intentional_homoglyphs.txt",
    "morpheus": "flair POS tagger",
    "seq2sick": "counter-fitted GloVe embeddings",
    "chinese": "OpenHowNet",
    "french": "Open Multilingual WordNet",
}


@pytest.mark.parametrize("name", sorted(DOWNLOADING))
def test_download_recipes_fail_fast_offline(recipes, wrapper, no_network, name):
    missing = [r for r in recipes.list_text_attacks(check=True) if r["name"] == name][0]["missing"]
    if not missing:
        pytest.skip(f"{name}: its resources are present on this machine")
    t = time.perf_counter()
    with pytest.raises(MissingResourceError) as err:
        recipes.build_text_attack(name, wrapper)
    assert time.perf_counter() - t < 2.0
    assert no_network == []
    msg = str(err.value)
    assert DOWNLOADING[name] in msg and name in msg and "Nothing was downloaded" in msg


def test_option_dependent_needs(recipes, wrapper, no_network):
    with pytest.raises(MissingResourceError, match="intentional_homoglyphs"):
        recipes.build_text_attack("bad-characters", wrapper, goal_function_type="targeted_classification")
    attack = recipes.build_text_attack(
        "bad-characters", wrapper, goal_function_type="targeted_classification", perturbation_type="invisible", target_class=0
    )
    assert type(attack.transformation).__name__ == "WordSwapInvisibleCharacters"
    assert "hf:bert-base-uncased" in recipes.get_text_attack("a2t").needs_for({"mlm": True})
    assert no_network == []


@pytest.mark.parametrize("name", ["deepwordbug", "pruthi", "input-reduction"])
def test_offline_recipes_run(recipes, wrapper, no_network, name, textattack_module):
    attack = recipes.build_text_attack(name, wrapper, query_budget=60)
    assert isinstance(attack, textattack_module.Attack)
    assert attack.goal_function.query_budget == 60
    result = attack.attack(POSITIVE, 1)
    assert result.perturbed_result.num_queries <= 60
    assert result.perturbed_result.attacked_text.text != POSITIVE or name == "pruthi"
    assert no_network == []


@pytest.mark.parametrize("name", ["pwws", "leap"])
def test_wordnet_recipes_run(recipes, wrapper, no_network, name, wordnet_ready, textattack_module):
    attack = recipes.build_text_attack(name, wrapper, query_budget=40)
    result = attack.attack(POSITIVE, 1)
    assert type(result).__name__ in ("SuccessfulAttackResult", "FailedAttackResult")
    assert result.perturbed_result.num_queries <= 40
    assert no_network == []


def test_register_your_own(recipes, wrapper, textattack_module):
    from textattack.attack_recipes import DeepWordBugGao2018

    calls = []

    def build(model_wrapper, *, budget_words=2):
        calls.append(budget_words)
        return DeepWordBugGao2018.build(model_wrapper, use_all_transformations=False)

    try:
        entry = recipes.register_text_attack("test-typos", build, needs=["stopwords"], notes="test")
        assert entry.offline and entry.class_name.endswith("build")
        attack = recipes.build_text_attack("Test-Typos", wrapper, budget_words=3, query_budget=10)
        assert calls == [3] and attack.goal_function.query_budget == 10
        with pytest.raises(ValueError, match="already registered"):
            recipes.register_text_attack("test-typos", build)
        recipes.register_resource(
            recipes.ResourceNeed("test-lexicon", "my private lexicon file", lambda: False, "ask the lab for lexicon.txt")
        )
        recipes.register_text_attack("test-typos", build, needs=["test-lexicon"], overwrite=True)
        with pytest.raises(MissingResourceError, match="my private lexicon file: ask the lab"):
            recipes.build_text_attack("test-typos", wrapper)
        with pytest.raises(ValueError, match="unknown resources"):
            recipes.register_text_attack("other", build, needs=["nope"])
    finally:
        recipes._REGISTRY.pop("test-typos", None)
        recipes.RESOURCES.pop("test-lexicon", None)
    with pytest.raises(KeyError, match="unknown text attack 'nope'"):
        recipes.build_text_attack("nope", wrapper)
    with pytest.raises(ValueError, match="query_budget"):
        recipes.build_text_attack("deepwordbug", wrapper, query_budget=0)
