"""TextAttack adapter: the held modalities of THAT example in every query, cache safety, run_attack parity.

The probe network records, for every row it scores, which example its image came from (the image holds
the example's id) and which example its text came from (each caption starts with a stopword unique to
its example: a run of '~' that holds no word, so no word-level transformation can change or delete it).
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch import nn

from mmfusion_attacks import FusionModel, Modality, run_attack
from mmfusion_attacks.errors import RowAlignmentError, TextInputError, UnsupportedAttackError

ta_adapter = pytest.importorskip("mmfusion_attacks.adapters.textattack")
FusionModelWrapper = ta_adapter.FusionModelWrapper

import textattack  # noqa: E402  (imported through the adapter: offline resources prepared)
from textattack.attack_recipes import (  # noqa: E402
    DeepWordBugGao2018,
    InputReductionFeng2018,
    Pruthi2019,
    PWWSRen2019,
)

TAGS = ["~" * (i + 1) for i in range(8)]
ID_STEP = 20.0  # image ids far apart, so an image attack's budget cannot blur them
CAPTION = "{tag} chest radiograph shows severe opacity effusion nodule consolidation near heart"


def wordnet_ok() -> bool:
    try:
        from nltk.corpus import wordnet

        return bool(wordnet.synsets("happy"))
    except LookupError:
        return False


class Probe(nn.Module):
    """Score of class 1 = image bias + count of 'alarming' words; records (image id, text tag) per row."""

    towers = ("image", "text")
    max_text_tokens = 40

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.rows: list[tuple[int, int]] = []
        self.words = {"severe": 1.0, "opacity": 1.0, "effusion": 1.0, "nodule": 1.0, "consolidation": 1.0}

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def _tag(self, text: str) -> int:
        first = text.split()[0] if text.split() else ""
        return TAGS.index(first) if first in TAGS else -1

    def encode(self, name, value):
        if name == "image":
            return value.flatten(1)[:, :2] * self.scale  # [id, bias]
        rows = [[float(self._tag(t)), sum(self.words.get(w.lower(), 0.0) for w in t.split())] for t in value]
        return torch.tensor(rows)

    def fuse(self, f):
        img, txt = f["image"], f["text"]
        self.rows.extend(zip((img[:, 0] / ID_STEP).round().long().tolist(), txt[:, 0].long().tolist()))
        s = img[:, 1:2] + txt[:, 1:2] - 4.5  # one alarming word less flips a clean row
        return torch.cat([-s, s], 1)

    def forward(self, image, text):
        return self.fuse({"image": self.encode("image", image), "text": self.encode("text", text)})


def probe_model() -> FusionModel:
    image = Modality("image", "image", 1, valid_range=None)
    return FusionModel(Probe(), [image, "text"], num_classes=2).eval()


def batch(n: int = 4, bias: list[float] | None = None) -> dict:
    bias = bias if bias is not None else [0.0] * n
    image = torch.zeros(n, 1, 1, 2)
    image[:, 0, 0, 0] = ID_STEP * torch.arange(n, dtype=torch.float32)
    image[:, 0, 0, 1] = torch.tensor(bias)
    return {"image": image, "text": [CAPTION.format(tag=TAGS[i]) for i in range(n)]}


def assert_paired(net: Probe) -> None:
    assert net.rows, "the probe saw no rows"
    bad = [(i, t) for i, t in net.rows if i != t]
    assert not bad, f"{len(bad)} of {len(net.rows)} rows paired a text with another example's image: {bad[:5]}"


RECIPES = {
    "deepwordbug": DeepWordBugGao2018,
    "pruthi": Pruthi2019,
    "input-reduction": InputReductionFeng2018,
    "pwws": PWWSRen2019,
}


@pytest.mark.parametrize("towers", [True, False], ids=["cached-towers", "full-forward"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_query_meets_its_own_image_and_the_image_comes_back_unchanged(recipe, towers):
    if recipe == "pwws" and not wordnet_ok():
        pytest.skip("WordNet not prepared (mmfusion-attacks text-resources --download)")
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion, cache_features=towers)
    assert wrapper.uses_towers is towers
    attack = RECIPES[recipe].build(wrapper)
    x = batch(4)
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in x.items()}
    fusion.model.rows.clear()
    res = run_attack(attack, x, torch.ones(4, dtype=torch.long))
    assert_paired(fusion.model)
    assert torch.equal(res.inputs["image"], x["image"])
    assert torch.equal(x["image"], before["image"]) and x["text"] == before["text"]  # caller data untouched
    assert res.attacked == ("text",) and res.toolkit == "textattack"
    assert len(res.inputs["text"]) == 4 and res.extras["queries"].min() >= 1
    if recipe != "input-reduction":  # input reduction keeps the prediction: it is not an evasion attack
        assert res.success.all(), res.extras["status"]
        assert (res.norms["text"]["words_changed"] >= 1).all()


def test_image_attack_holds_the_text_identical():
    art = pytest.importorskip("art.attacks.evasion")
    from mmfusion_attacks.adapters.art import to_art

    fusion = probe_model()
    fusion.modalities["image"] = Modality("image", "image", 1, valid_range=(-200.0, 200.0))
    est = to_art(fusion, "image", sample=batch(4))
    attack = art.FastGradientMethod(est, eps=0.6)
    x = batch(4, bias=[0.0, 0.5, 1.0, 1.4])
    fusion.model.rows.clear()
    res = run_attack(attack, x, torch.ones(4, dtype=torch.long))
    assert res.inputs["text"] == x["text"]
    assert_paired(fusion.model)
    assert not torch.equal(res.inputs["image"], x["image"])


def test_cached_and_uncached_give_identical_attacks():
    outs = []
    for cache in (True, False):
        textattack.shared.utils.set_seed(0)  # DeepWordBug's character edits are random
        fusion = probe_model()
        attack = DeepWordBugGao2018.build(FusionModelWrapper(fusion, cache_features=cache))
        res = run_attack(attack, batch(4, bias=[0.0, 0.2, 0.4, 3.0]), torch.ones(4, dtype=torch.long))
        outs.append((res.inputs["text"], res.extras["queries"].tolist(), res.extras["status"], res.adv_pred.tolist(),
                     res.clean_pred.tolist(), res.success.tolist(), res.labels.tolist()))
    assert outs[0] == outs[1]


def test_cached_run_scores_clean_and_adversarial_texts_without_encoding_the_images_again():
    """The optimised path (clean and final scores through the cached held features) vs the full forward:
    equal logits and results; the image tower runs once per example in the whole run."""
    encoded = []
    results = {}
    for cache in (True, False):
        textattack.shared.utils.set_seed(0)
        fusion = probe_model()
        encode = fusion.model.encode

        def counting(name, value, encode=encode):
            if name == "image":
                encoded.append(len(value))
            return encode(name, value)

        fusion.model.encode = counting
        encoded.clear()
        x = batch(4, bias=[0.0, 0.2, 0.4, 3.0])
        res = run_attack(DeepWordBugGao2018.build(FusionModelWrapper(fusion, cache_features=cache)), x, torch.ones(4, dtype=torch.long))
        results[cache] = (res, sum(encoded), fusion(res.inputs), fusion(x))
    (cached, n_cached, adv_full, clean_full), (plain, n_plain, _, _) = results[True], results[False]
    assert n_cached == 4 < n_plain  # once per example vs the clean batch, every query and the final batch
    assert cached.inputs["text"] == plain.inputs["text"]
    for field in ("clean_pred", "adv_pred", "success", "labels"):
        assert torch.equal(getattr(cached, field), getattr(plain, field))
    assert torch.equal(cached.adv_pred, adv_full.argmax(1)) and torch.equal(cached.clean_pred, clean_full.argmax(1))


def test_feature_cache_follows_parameter_updates():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    ex = wrapper.examples(batch(1, bias=[1.0]))
    first = wrapper([tuple(ex[0].values())])
    with torch.no_grad():
        fusion.model.scale.mul_(3.0)  # an optimiser step changes parameters in place
    second = wrapper([tuple(ex[0].values())])
    assert not torch.equal(first, second)
    assert torch.equal(second, fusion(batch(1, bias=[1.0])))


def _duplicate_caption_batch():
    # A: image bias -5 -> predicted 0, label 1 -> TextAttack skips it (already wrong)
    # B: the SAME caption, image bias 0 -> predicted 1 (correct) -> must be attacked, not skipped with A's score
    x = batch(2, bias=[-5.0, 0.0])
    x["text"] = [x["text"][0], x["text"][0]]
    x["image"][1, 0, 0, 0] = 0.0  # same tag as the caption: same example identity for the probe
    return x


def test_duplicate_caption_gets_its_own_score_in_a_per_example_loop():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    x = _duplicate_caption_batch()
    # the plain TextAttack loop, no cache clearing between examples
    results = [attack.attack(ex, 1) for ex in wrapper.examples(x)]
    assert [type(r).__name__ for r in results] == ["SkippedAttackResult", "SuccessfulAttackResult"]
    res = run_attack(attack, x, torch.ones(2, dtype=torch.long))
    assert res.extras["status"] == ["skipped", "successful"]


def test_duplicate_caption_gets_its_own_score_with_attacker():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    x = _duplicate_caption_batch()
    args = textattack.AttackArgs(num_examples=2, silent=True, disable_stdout=True, random_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = textattack.Attacker(attack, wrapper.dataset(x, [1, 1]), args).attack_dataset()
    assert [type(r).__name__ for r in results] == ["SkippedAttackResult", "SuccessfulAttackResult"]
    assert_paired(fusion.model)


def test_queries_are_batched():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion, batch_size=64)
    ex = wrapper.examples(batch(3))
    rows = [tuple(e.values()) for e in ex] * 5
    out = wrapper(rows)
    assert out.shape == (15, 2) and wrapper.calls == 1


def test_bare_text_needs_exactly_one_held_example_and_keys_must_be_known():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    wrapper.examples(batch(1))
    assert wrapper([CAPTION.format(tag=TAGS[0])]).shape == (1, 2)
    wrapper.examples(batch(2))
    with pytest.raises(RowAlignmentError, match="bare text"):
        wrapper([CAPTION.format(tag=TAGS[0])])
    with pytest.raises(RowAlignmentError, match="never registered"):
        wrapper([(CAPTION.format(tag=TAGS[0]), "##")])


def test_an_attacker_on_a_plain_dataset_of_several_texts_is_refused():
    """With one held example a bare text is paired with it: a plain Dataset of several captions (of other
    examples) would pair every caption with that one image. Refused when the Attacker is built."""
    from textattack.attack_recipes import DeepWordBugGao2018

    wrapper = FusionModelWrapper(probe_model())
    b = batch(3)
    wrapper.examples({k: v[:1] for k, v in b.items()})
    attack = DeepWordBugGao2018.build(wrapper)
    args = textattack.AttackArgs(num_examples=1, disable_stdout=True, silent=True)
    with pytest.raises(RowAlignmentError, match="plain Dataset of 3 rows"):
        textattack.Attacker(attack, textattack.datasets.Dataset([(t, 1) for t in b["text"]]), args)
    textattack.Attacker(attack, textattack.datasets.Dataset([(b["text"][0], 1)]), args)  # one row: its example is held


def test_wrapper_refuses_tensor_modalities_and_surface_refuses_text():
    fusion = probe_model()
    with pytest.raises(UnsupportedAttackError, match="'image' is a image modality"):
        FusionModelWrapper(fusion, text="image")
    with pytest.raises(UnsupportedAttackError, match="'text' is text"):
        fusion.surface("text")
    image_only = FusionModel(nn.Flatten(), [Modality("image", "image", 1)], num_classes=2)
    with pytest.raises(UnsupportedAttackError, match="no text modality"):
        FusionModelWrapper(image_only)


@pytest.mark.parametrize(
    "texts, error",
    [
        (["", "ok words here"], "item 0 is empty"),
        ([3, "ok words here"], "item 0 is int"),
        (["word " * 60, "ok words here"], "62 tokens > the model.s 40"),
    ],
)
def test_bad_text_fails_before_any_query(texts, error):
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    x = batch(2)
    x["text"] = texts
    fusion.model.rows.clear()
    with pytest.raises(TextInputError, match=error):
        run_attack(attack, x, torch.ones(2, dtype=torch.long))
    assert not fusion.model.rows


def test_only_stopwords_is_skipped_and_counted():
    fusion = probe_model()
    attack = DeepWordBugGao2018.build(FusionModelWrapper(fusion))
    x = batch(2)
    x["text"][1] = "of the and to"
    res = run_attack(attack, x, torch.ones(2, dtype=torch.long))
    assert res.extras["status"][1] == "skipped-only-stopwords"
    assert any(f.startswith("skipped: 1 row") for f in res.flags)
    assert res.inputs["text"][1] == "of the and to"


def test_model_state_restored_and_targets_refused_for_untargeted_goal():
    fusion = probe_model().train()
    attack = DeepWordBugGao2018.build(FusionModelWrapper(fusion))
    run_attack(attack, batch(2), torch.ones(2, dtype=torch.long))
    assert fusion.training and fusion.model.scale.requires_grad
    with pytest.raises(UnsupportedAttackError, match="untargeted"):
        run_attack(attack, batch(2), torch.ones(2, dtype=torch.long), targets=torch.zeros(2, dtype=torch.long))


def test_wrapper_pickles_with_its_held_examples():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    ex = wrapper.examples(batch(2, bias=[0.0, 3.0]))
    clone = pickle.loads(pickle.dumps(wrapper))
    rows = [tuple(e.values()) for e in ex]
    assert torch.equal(clone(rows), wrapper(rows))


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_image_attacks_of_both_toolkits_hold_the_text(toolkit):
    from mmfusion_attacks.recipes import make_attack

    fusion = probe_model()
    fusion.modalities["image"] = Modality("image", "image", 1, valid_range=(-200.0, 200.0)).replace(eps=0.6)
    attack = make_attack("pgd", fusion, ("image",), toolkit=toolkit, eps=0.6, steps=3)
    x = batch(4, bias=[0.0, 0.5, 1.0, 1.4])
    fusion.model.rows.clear()
    res = run_attack(attack, x, torch.ones(4, dtype=torch.long))
    assert res.inputs["text"] == x["text"]
    assert_paired(fusion.model)


@pytest.mark.parametrize("name", ["synonym", "deletion"])
def test_seeded_augmentations_hold_the_image_and_reproduce(name):
    if name == "synonym" and not wordnet_ok():
        pytest.skip("WordNet not prepared (mmfusion-attacks text-resources --download)")
    from mmfusion_attacks.text.augment import SynonymSubstitution, WordDeletion

    make = {"synonym": SynonymSubstitution, "deletion": WordDeletion}[name]
    fusion = probe_model()
    x = batch(4)
    fusion.model.rows.clear()
    first = ta_adapter.perturb_text(make(0.4, seed=3), fusion, x, torch.ones(4, dtype=torch.long))
    second = ta_adapter.perturb_text(make(0.4, seed=3), fusion, x, torch.ones(4, dtype=torch.long))
    assert first.inputs["text"] == second.inputs["text"] != x["text"]
    assert torch.equal(first.inputs["image"], x["image"])
    assert_paired(fusion.model)
    assert (first.norms["text"]["words_changed"] >= 1).all()


def test_long_text_can_be_skipped_and_counted():
    fusion = probe_model()
    attack = DeepWordBugGao2018.build(FusionModelWrapper(fusion, long_text="skip"))
    x = batch(2)
    x["text"][1] = x["text"][1] + " opacity" * 40
    res = run_attack(attack, x, torch.ones(2, dtype=torch.long))
    assert res.extras["status"][1] == "skipped-too-long"
    assert any("1 row(s) not attacked (longer than the model reads)" in f for f in res.flags)
    assert res.inputs["text"][1] == x["text"][1]


def test_augmentation_skips_are_counted_in_flags():
    from mmfusion_attacks.text.augment import WordDeletion

    fusion = probe_model()
    x = batch(2)
    x["text"][1] = "opacity"  # one word: deletion never removes the last word
    res = ta_adapter.perturb_text(WordDeletion(0.5, seed=0), fusion, x, torch.ones(2, dtype=torch.long))
    assert any(f.startswith("skipped: 1 row") for f in res.flags)
    assert res.inputs["text"][1] == "opacity"
