"""Seeded TextAttack augmenters: exact counts, reproducibility, batch independence, bad input."""

from __future__ import annotations

import math
import random

import pytest

from mmfusion_attacks.errors import TextInputError

TWENTY = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"


@pytest.fixture(scope="module")
def augment(textattack_module):
    from mmfusion_attacks.text import augment

    return augment


@pytest.fixture(scope="module")
def words(textattack_module):
    from textattack.shared import AttackedText

    return lambda text: AttackedText(text).words


def test_target_count_rounding(augment):
    tc = augment.target_count
    assert [tc(f, 20) for f in (0.2, 0.4, 0.5)] == [4, 8, 10]
    assert tc(0.5, 7) == 3 and tc(0.29, 100) == 29  # int(0.29 * 100) would be 28
    assert tc(0.01, 20) == 1 and tc(0.0, 20) == 0 and tc(0.5, 0) == 0 and tc(1.0, 9) == 9


@pytest.mark.parametrize("fraction,expected", [(0.2, 4), (0.4, 8), (0.5, 10), (1.0, 19)])
def test_deletion_counts(augment, words, fraction, expected):
    d = augment.WordDeletion(fraction, seed=0).details([TWENTY])[0]
    assert (d.n_words, d.n_eligible, d.n_target, d.n_changed, d.skipped) == (20, 20, expected, expected, None)
    kept = words(d.perturbed)
    assert len(kept) == 20 - expected
    original = TWENTY.split()
    it = iter(original)
    assert all(w in it for w in kept)  # a subsequence: only deletions, order kept


def test_deletion_rounding_and_small_texts(augment):
    details = augment.WordDeletion(0.5, seed=1).details(["a b c d e f g", "only", "two words"])
    assert [(d.n_target, d.n_changed) for d in details] == [(3, 3), (0, 0), (1, 1)]
    assert details[1].skipped and "single word" in details[1].skipped and details[1].perturbed == "only"


def test_seed_reproducible_and_seed_matters(augment, sample_texts):
    a = augment.WordDeletion(0.4, seed=7)(sample_texts)
    assert a == augment.WordDeletion(0.4, seed=7)(sample_texts)
    others = [augment.WordDeletion(0.4, seed=s)(sample_texts) for s in (8, 9, 10)]
    assert any(o != a for o in others)


def test_batch_composition_independence_and_ids(augment, sample_texts):
    aug = augment.WordDeletion(0.5, seed=3)
    full = aug(sample_texts)
    assert aug(sample_texts[::-1]) == full[::-1]
    assert aug([sample_texts[2]]) == [full[2]]
    assert aug(["something else entirely here", sample_texts[1]])[1] == full[1]
    assert full[0] == full[4]  # keyed by content: duplicates match
    by_id = [aug([sample_texts[0]], ids=[i])[0] for i in range(6)]
    assert len(set(by_id)) > 1  # keyed by id: duplicates vary
    assert aug([sample_texts[0]], ids=[3]) == aug(["x y", sample_texts[0]], ids=[9, 3])[1:]


def test_global_random_state_untouched(augment, sample_texts):
    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    first = random.random()
    augment.WordDeletion(0.5, seed=0)(sample_texts)
    assert [first, random.random(), random.random()] == expected


def test_bad_input(augment):
    aug = augment.WordDeletion(0.5)
    with pytest.raises(TextInputError, match="text 1 must be a str"):
        aug(["fine text here", None])
    with pytest.raises(TextInputError, match="list of texts"):
        aug("a single string")
    with pytest.raises(TextInputError, match="ids"):
        aug(["a b"], ids=[1, 2])
    details = aug.details(["", "   ", "!!"])
    assert [d.skipped for d in details] == ["empty text (no words)"] * 3
    assert [d.perturbed for d in details] == ["", "   ", "!!"]
    summary = aug.summary(details)
    assert summary["skipped"] == 3 and summary["changed"] == 0
    with pytest.raises(TextInputError, match="text 0 has nothing to change"):
        augment.WordDeletion(0.5, on_invalid="raise")([""])
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="fraction"):
            augment.WordDeletion(bad)
    assert augment.WordDeletion(0.0)(["keep every word"]) == ["keep every word"]


def test_textattack_api_is_seeded(augment, textattack_module):
    aug = augment.WordDeletion(0.5, seed=2)
    assert isinstance(aug, textattack_module.augmentation.Augmenter)
    assert aug.augment(TWENTY) == aug([TWENTY])
    assert aug.augment_many([TWENTY, "a b c d"]) == [[t] for t in aug([TWENTY, "a b c d"])]


# ------------------------------------------------------------------------------------ synonyms


@pytest.fixture(scope="module")
def synonyms(augment, wordnet_ready):
    return {f: augment.SynonymSubstitution(f, seed=0) for f in (0.2, 0.4)}


def test_synonym_counts_are_fractions_of_eligible_words(synonyms, words, sample_texts):
    for fraction, aug in synonyms.items():
        for d in aug.details(sample_texts):
            assert d.n_eligible > 0 and d.skipped is None
            assert d.n_target == max(1, math.floor(fraction * d.n_eligible))
            assert d.n_changed == d.n_target, d
            before, after = words(d.original), words(d.perturbed)
            assert len(before) == len(after)
            changed = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
            assert len(changed) == d.n_changed
            assert all(before[i].lower() not in aug.stopwords for i in changed)
            assert all(after[i].lower() != before[i].lower() for i in changed)  # no case-only "synonyms"
    # 20 words; stopwords in both lists: the, over, while, a; "river" has no WordNet synonym; eligible:
    # quick brown fox jumps lazy dog happy child watches bright sunset near = 12 -> 20%: 2, 40%: 4
    d = synonyms[0.4].details([sample_texts[0]])[0]
    assert (d.n_words, d.n_eligible, d.n_changed) == (20, 12, 4)
    assert synonyms[0.2].details([sample_texts[0]])[0].n_changed == 2


def test_synonym_reproducible_and_candidates_sorted(augment, synonyms, sample_texts):
    aug = synonyms[0.4]
    assert aug(sample_texts) == augment.SynonymSubstitution(0.4, seed=0)(sample_texts)
    cands = aug.transformation._get_replacement_words("happy")
    assert cands == sorted(cands) and cands and "happy" not in cands


def test_synonym_bad_text(augment, synonyms):
    aug = synonyms[0.2]
    details = aug.details(["the of and", "", "It was"])
    assert [d.skipped for d in details] == ["only stopwords", "empty text (no words)", "only stopwords"]
    assert [d.perturbed for d in details] == ["the of and", "", "It was"]  # "It" is protected despite the capital
    with pytest.raises(TextInputError, match="only stopwords"):
        augment.SynonymSubstitution(0.2, on_invalid="raise")(["the of and"])
    with pytest.raises(TextInputError, match="must be a str"):
        aug([42])
