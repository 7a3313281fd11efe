"""Property-based fuzzing of the text half through both entry points a TextAttack user reaches:
``run_attack`` and ``textattack.Attacker`` over ``wrapper.dataset``. Texts (unicode, separators, the key
symbols, newlines, lengths), labels and options are drawn at random. Every draw either raises one of
the package's error types before any query, or returns results that keep the contract: the image
bit-identical and paired with its own text in every query, caller data untouched, a status per row,
skipped rows counted."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmfusion_attacks import MMFusionError, run_attack

ta_adapter = pytest.importorskip("mmfusion_attacks.adapters.textattack")
import textattack  # noqa: E402
from test_textattack import TAGS, probe_model  # noqa: E402
from textattack.attack_recipes import DeepWordBugGao2018, InputReductionFeng2018  # noqa: E402

FUZZ = os.environ.get("MMFUSION_FUZZ_EXAMPLES")
PIECES = ["severe", "opacity", "effusion", "the", "of", "and", "<SPLIT>", "\n", "\t", " ", "!#$%", "&+,.:;", "<=>?^|",
          "😀", "肺", "שלום", "مرحبا", "e\u0301", "\u200b", "\x00", "''", "-", "x-ray", "3.5cm"]
WORDS = ["severe", "opacity", "effusion", "nodule", "heart", "lung", "the", "of", "normal", "clear"]
words = st.lists(
    st.one_of(*[st.sampled_from(WORDS)] * 12, st.sampled_from(PIECES), st.text(min_size=1, max_size=6)),
    min_size=0, max_size=40,
)
label = st.one_of(st.sampled_from([0, 1]), st.sampled_from([0, 1]), st.sampled_from([0, 1]), st.integers(-2, 3), st.sampled_from([0.5, 1.0, True]))


def _text(tag: int, parts: list[str], long: bool) -> str:
    body = " ".join(parts) + (" opacity" * 600 if long else "")
    return f"{TAGS[tag]} {body}" if tag >= 0 else body


@settings(max_examples=int(FUZZ or 60), deadline=None, derandomize=not FUZZ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    n=st.integers(1, 3),
    bodies=st.lists(words, min_size=3, max_size=3),
    tagged=st.lists(st.booleans(), min_size=3, max_size=3),
    longs=st.lists(st.sampled_from([False] * 7 + [True]), min_size=3, max_size=3),
    labels=st.lists(label, min_size=3, max_size=3),
    long_text=st.sampled_from(["error", "skip"]),
    max_words=st.sampled_from([None, 512, 512, 5]),
    towers=st.booleans(),
    entry=st.sampled_from(["run_attack", "attacker"]),
    recipe=st.sampled_from(["deepwordbug", "input-reduction"]),
)
def test_fuzzed_texts_labels_and_options(n, bodies, tagged, longs, labels, long_text, max_words, towers, entry, recipe):
    fusion = probe_model()
    fusion.model.max_text_tokens = 10_000  # the word limit is what is fuzzed here
    wrapper = ta_adapter.FusionModelWrapper(fusion, cache_features=towers, long_text=long_text, max_words=max_words)
    build = {"deepwordbug": DeepWordBugGao2018, "input-reduction": InputReductionFeng2018}[recipe].build
    attack = build(wrapper)
    attack.goal_function.query_budget = 40
    image = torch.zeros(n, 1, 1, 2)
    image[:, 0, 0, 0] = 20.0 * torch.arange(n, dtype=torch.float32)
    texts = [_text(i if tagged[i] else -1, bodies[i], longs[i]) for i in range(n)]
    x = {"image": image, "text": list(texts)}
    y = labels[:n]
    before_image = image.clone()
    fusion.model.rows.clear()
    try:
        if entry == "run_attack":
            res = run_attack(attack, x, torch.as_tensor(y))
        else:
            dataset = wrapper.dataset(x, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = textattack.Attacker(
                    attack, dataset, textattack.AttackArgs(num_examples=n, silent=True, disable_stdout=True, random_seed=0)
                ).attack_dataset()
    except MMFusionError as err:
        event(f"{entry}: {type(err).__name__}: {str(err)[:40]}")
        return
    finally:
        assert x["text"] == texts and torch.equal(x["image"], before_image)  # caller data untouched
        bad = [(i, t) for i, t in fusion.model.rows if t != -1 and i != t]
        assert not bad, f"mis-paired rows {bad[:5]}"
    event(f"{entry}: result")
    if entry == "run_attack":
        assert torch.equal(res.inputs["image"], image) and len(res.inputs["text"]) == n
        assert len(res.extras["status"]) == n
        for i, status in enumerate(res.extras["status"]):
            if status.startswith("skipped-"):
                assert res.inputs["text"][i] == texts[i]
        n_skipped = sum(s.startswith("skipped-") for s in res.extras["status"])
        assert (n_skipped > 0) == any(f.startswith("skipped:") for f in res.flags)
        assert bool((res.norms["text"]["fraction_changed"] <= 1).all())
    else:
        assert len(results) == n
        for i, result in enumerate(results):
            if i in dataset.skipped:
                assert type(result).__name__ == "SkippedAttackResult"
