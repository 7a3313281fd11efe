"""The text half under hostile models and every entry point a TextAttack user reaches: models that edit
their inputs or weights, buffers that move, the Attacker / dataset path, checkpoints, long and odd texts."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from mmfusion_attacks import FusionModel, LabelError, Modality, run_attack
from mmfusion_attacks.errors import RowAlignmentError, TextInputError

ta_adapter = pytest.importorskip("mmfusion_attacks.adapters.textattack")
FusionModelWrapper = ta_adapter.FusionModelWrapper

import textattack  # noqa: E402
from test_textattack import CAPTION, TAGS, Probe, batch, probe_model  # noqa: E402
from textattack.attack_recipes import BadCharacters2021, DeepWordBugGao2018, InputReductionFeng2018  # noqa: E402

IMAGE = Modality("image", "image", 1, valid_range=None)


def assert_paired_where_tagged(net) -> None:
    """Character-level attacks may edit the probe's tag itself (it then reads -1): every row whose tag
    survived must meet its own image."""
    assert net.rows
    bad = [(i, t) for i, t in net.rows if t != -1 and i != t]
    assert not bad, bad[:5]


def attacker_args(**kw):
    return textattack.AttackArgs(silent=True, disable_stdout=True, random_seed=0, **kw)


def run_attacker(attack, dataset, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return textattack.Attacker(attack, dataset, attacker_args(**kw)).attack_dataset()


# ---------------------------------------------------------------------- held text is held
class TextEditor(Probe):
    """Appends to the first caption of every list it is given, in place, and records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def forward(self, image, text):
        self.seen.extend(text)
        out = super().forward(image, text)
        text[0] = text[0] + " mutated"
        text.append("an extra row")
        return out

    def encode(self, name, value):
        if name == "text":
            self.seen.extend(value)
            out = super().encode(name, value)
            value[0] = value[0] + " mutated"
            return out
        return super().encode(name, value)


def editor_model() -> FusionModel:
    return FusionModel(TextEditor(), [IMAGE.replace(valid_range=(-200.0, 200.0)).replace(eps=0.6), "text"], num_classes=2).eval()


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_image_attack_on_a_text_editing_model_holds_the_text(toolkit):
    from mmfusion_attacks.recipes import make_attack

    fusion = editor_model()
    x = batch(4, bias=[0.0, 0.5, 1.0, 1.4])
    original = list(x["text"])
    attack = make_attack("pgd", fusion, ("image",), toolkit=toolkit, eps=0.6, steps=3)
    res = run_attack(attack, x, torch.ones(4, dtype=torch.long))
    assert x["text"] == original and res.inputs["text"] == original
    assert fusion.model.seen and all("mutated" not in t for t in fusion.model.seen)


@pytest.mark.parametrize("towers", [True, False])
def test_text_attack_on_a_text_editing_model_returns_what_the_attack_made(towers):
    fusion = editor_model()
    wrapper = FusionModelWrapper(fusion, cache_features=towers)
    textattack.shared.utils.set_seed(0)
    res = run_attack(DeepWordBugGao2018.build(wrapper), batch(3), torch.ones(3, dtype=torch.long))
    assert all("mutated" not in t for t in fusion.model.seen)
    for before, after, n in zip(batch(3)["text"], res.inputs["text"], res.norms["text"]["words_changed"].tolist()):
        assert "mutated" not in after
        assert n == ta_adapter.words_changed(before, after) >= 1
    from mmfusion_attacks.text.augment import WordDeletion

    aug = ta_adapter.perturb_text(WordDeletion(0.3, seed=0), fusion, batch(3), torch.ones(3, dtype=torch.long))
    assert all("mutated" not in t for t in aug.inputs["text"])


# ---------------------------------------------------------------------- cache equals the full forward
class Towers(nn.Module):
    """Image tower with batch norm (running statistics are buffers) and a scaled linear layer."""

    towers = ("image", "text")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.BatchNorm1d(4)
        self.image_proj = nn.Linear(4, 3)
        self.words = nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
        self.head = nn.Linear(6, 2)

    def encode(self, name, value):
        if name == "image":
            return self.image_proj(self.norm(value.flatten(1)))
        return torch.stack([torch.tensor([float(len(t.split())), float(t.count("e")), float(t.count("o"))]) for t in value]) * self.words

    def fuse(self, f):
        return self.head(torch.cat([f["image"], f["text"]], 1))

    def forward(self, image, text):
        return self.fuse({"image": self.encode("image", image), "text": self.encode("text", text)})


def towers_batch(n=3):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(n, 1, 2, 2, generator=g), "text": ["one two three", "four five six seven", "eight nine"][:n]}


def write_data(f):
    f.model.image_proj.weight.data.mul_(3.0)


def write_data_element(f):
    f.model.image_proj.weight.data[0, 0] += 0.25


def write_permuted(f):
    w = f.model.image_proj.weight
    w.data.copy_(w.data.flatten().flip(0).view_as(w))


def load_state(f):
    state = {k: v * 2 for k, v in f.model.state_dict().items() if v.is_floating_point()}
    f.model.load_state_dict(state, strict=False)


def optimiser_step(f):
    opt = torch.optim.SGD(f.model.parameters(), lr=0.5)
    f.model.train()
    out = f(towers_batch())
    out.sum().backward()
    opt.step()
    f.model.eval()


def running_stats(f):
    with torch.no_grad():
        f.model.train()
        f(towers_batch())  # batch norm updates its running statistics in place
        f.model.eval()


def buffer_data(f):
    f.model.norm.running_var.data.mul_(4.0)


def replace_parameter(f):
    f.model.image_proj.weight = nn.Parameter(f.model.image_proj.weight.detach() + 1.0)


def replace_module(f):
    f.model.image_proj = nn.Linear(4, 3)


def train_switch(f):
    f.model.train()


@pytest.mark.parametrize(
    "change",
    [write_data, write_data_element, write_permuted, load_state, optimiser_step, running_stats, buffer_data, replace_parameter, replace_module, train_switch],
)
def test_cached_features_equal_the_full_forward_after_every_kind_of_change(change):
    fusion = FusionModel(Towers(), [IMAGE, "text"], num_classes=2).eval()
    wrapper = FusionModelWrapper(fusion)
    assert wrapper.uses_towers
    x = towers_batch()
    rows = [tuple(e.values()) for e in wrapper.examples(x)]
    before = wrapper(rows)
    change(fusion)
    after = wrapper(rows)
    with torch.no_grad():
        was = fusion.training
        full = fusion.eval()(x)
        fusion.train(was)
    assert torch.allclose(after, full, rtol=0, atol=1e-6), (after, full)
    assert not torch.equal(before, after) or change is train_switch


def test_feature_cache_is_off_with_the_reason_under_a_random_defence_and_autocast():
    class Jitter(nn.Module):
        def forward(self, x):
            return x + 0.1 * torch.randn_like(x)

    fusion = FusionModel(Towers(), [IMAGE, "text"], num_classes=2, defences={"image": Jitter()}).eval()
    wrapper = FusionModelWrapper(fusion)
    assert not wrapper.uses_towers and "may be random" in wrapper.cache_off_reason
    res = run_attack(DeepWordBugGao2018.build(wrapper), towers_batch(2), torch.ones(2, dtype=torch.long))
    assert any(f.startswith("feature-cache off: a preprocessing defence on ['image']") for f in res.flags)
    assert res.extras["cached_features"] is False
    amp = FusionModel(Towers(), [IMAGE, "text"], num_classes=2).eval().use_amp()
    assert "autocast" in FusionModelWrapper(amp).cache_off_reason


# ---------------------------------------------------------------------- words changed
def test_words_changed_counts_deletions_once():
    words = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9".split()
    kept = " ".join(w for i, w in enumerate(words) if i not in (1, 4, 6, 9))
    assert ta_adapter.words_changed(" ".join(words), kept) == 4
    assert ta_adapter.words_changed("a b c d", "a x c d") == 1
    assert ta_adapter.words_changed("a b c d", "a b c d e") == 1
    assert ta_adapter.words_changed("a b c", "x y z") == 3


def test_input_reduction_reports_the_words_it_deleted():
    fusion = probe_model()
    x = batch(2, bias=[3.0, 3.0])  # far from the boundary: many words can go
    res = run_attack(InputReductionFeng2018.build(FusionModelWrapper(fusion)), x, torch.ones(2, dtype=torch.long))
    for i, (before, after) in enumerate(zip(x["text"], res.inputs["text"])):
        words = textattack.shared.AttackedText(before).words  # TextAttack's words ('~' is none)
        deleted = len(words) - len(textattack.shared.AttackedText(after).words)
        assert deleted >= 1
        assert int(res.norms["text"]["words_changed"][i]) == deleted
        assert abs(float(res.norms["text"]["fraction_changed"][i]) - deleted / len(words)) < 1e-6


# ---------------------------------------------------------------------- the Attacker path checks like run_attack
def test_attacker_skips_only_stopword_texts_and_counts_them():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    x = batch(3)
    x["text"][1] = "of the and to"
    dataset = wrapper.dataset(x, [1, 1, 1])
    results = run_attacker(attack, dataset, num_examples=3)
    assert type(results[1]).__name__ == "SkippedAttackResult"
    assert results[1].mmfusion_skip_reason.startswith("only stopwords")
    assert dataset.skipped == {1: "only stopwords: no word the attack may change"}
    assert [type(r).__name__ for r in results[::2]] == ["SuccessfulAttackResult"] * 2


@pytest.mark.parametrize(
    "labels, match",
    [([1, 0.7, 1], "integer class ids"), ([1, -1, 1], r"outside \[0, 2\)"), ([1, 2, 1], r"outside \[0, 2\)"), ([1, 1], "shape")],
)
def test_dataset_refuses_bad_labels_before_any_query(labels, match):
    fusion = probe_model()
    fusion.num_classes = None  # the class count comes from one forward
    wrapper = FusionModelWrapper(fusion)
    with pytest.raises(LabelError, match=match):
        wrapper.dataset(batch(3), labels)


def test_dataset_refuses_long_texts_or_skips_them():
    fusion = probe_model()
    x = batch(2)
    x["text"][1] = x["text"][1] + " opacity" * 40
    with pytest.raises(TextInputError, match="tokens > the model's 40"):
        FusionModelWrapper(fusion).dataset(x, [1, 1])
    wrapper = FusionModelWrapper(fusion, long_text="skip")
    dataset = wrapper.dataset(x, [1, 1])
    results = run_attacker(DeepWordBugGao2018.build(wrapper), dataset, num_examples=2)
    assert [type(r).__name__ for r in results] == ["SuccessfulAttackResult", "SkippedAttackResult"]
    assert dataset.skipped == {1: "longer than the model reads"}


def test_attacker_refuses_an_attack_built_on_another_wrapper():
    fusion = probe_model()
    dataset = FusionModelWrapper(fusion).dataset(batch(2), [1, 1])
    with pytest.raises(RowAlignmentError, match="registered in the dataset's wrapper only"):
        textattack.Attacker(DeepWordBugGao2018.build(FusionModelWrapper(fusion)), dataset, attacker_args())


@pytest.mark.parametrize("entry", ["run_attack", "dataset"])
def test_split_token_is_refused_up_front(entry):
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    x = batch(2)
    x["text"][0] = "severe opacity <SPLIT> effusion"
    fusion.model.rows.clear()
    with pytest.raises(TextInputError, match="row 0 contains '<SPLIT>'"):
        if entry == "run_attack":
            run_attack(DeepWordBugGao2018.build(wrapper), x, torch.ones(2, dtype=torch.long))
        else:
            wrapper.dataset(x, [1, 1])
    assert not fusion.model.rows


class NoLimit(Probe):
    max_text_tokens = None


def test_a_huge_report_on_a_model_without_a_token_limit_is_refused_in_milliseconds():
    import time

    fusion = FusionModel(NoLimit(), [IMAGE, "text"], num_classes=2).eval()
    x = batch(2)
    x["text"][0] = CAPTION.format(tag=TAGS[0]) + " severe" * 6000
    attack = DeepWordBugGao2018.build(FusionModelWrapper(fusion))
    start = time.perf_counter()
    with pytest.raises(TextInputError, match=r"\d+ words > max_words=512"):
        run_attack(attack, x, torch.ones(2, dtype=torch.long))
    assert time.perf_counter() - start < 5
    res = run_attack(DeepWordBugGao2018.build(FusionModelWrapper(fusion, long_text="skip")), x, torch.ones(2, dtype=torch.long))
    assert res.extras["status"][0] == "skipped-too-long"
    wide = FusionModelWrapper(fusion, max_words=None)
    assert ta_adapter.check_texts(fusion, x["text"], max_words=wide.max_words) == {"only-stopwords": [], "too-long": [], "no-words": []}


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_resumed_on_reordered_data_is_refused(tmp_path):
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    x = batch(4)
    labels = [1, 1, 1, 1]
    run_attacker(attack, wrapper.dataset(x, labels), num_examples=2, checkpoint_interval=1, checkpoint_dir=str(tmp_path))
    files = sorted(tmp_path.glob("*.ta.chkpt"), key=lambda p: p.stat().st_mtime)
    checkpoint = textattack.shared.AttackCheckpoint.load(str(files[-1]))
    assert checkpoint.results_count == 2
    reordered = {"image": x["image"].flip(0), "text": x["text"][::-1]}
    with pytest.raises(RowAlignmentError, match="another row order"):
        textattack.Attacker.from_checkpoint(attack, wrapper.dataset(reordered, labels), checkpoint)
    # the same order resumes, and the examples finished before are not attacked again
    checkpoint.attack_args.num_examples = 4
    checkpoint.worklist.extend([2, 3])
    fusion.model.rows.clear()
    attacker = textattack.Attacker.from_checkpoint(attack, wrapper.dataset(x, labels), checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = attacker.attack_dataset()
    assert len(results) == 4
    assert {i for i, _ in fusion.model.rows} == {2, 3}


# ---------------------------------------------------------------------- bad characters
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("kind", ["invisible", "deletions", "reorderings"])
def test_bad_characters_runs_on_keyed_examples(rows, kind):
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = BadCharacters2021.build(wrapper, goal_function_type="targeted_classification", perturbation_type=kind,
                                     target_class=0, popsize=4, maxiter=2, perturbs=2)
    x = batch(rows, bias=[0.0] * rows)
    fusion.model.rows.clear()
    res = run_attack(attack, x, torch.ones(rows, dtype=torch.long))
    assert_paired_where_tagged(fusion.model)
    assert torch.equal(res.inputs["image"], x["image"])
    assert res.targets.tolist() == [0] * rows
    for before, after in zip(x["text"], res.inputs["text"]):
        assert after.split()[0] == before.split()[0] or res.extras["status"]  # key never merged into the text
        assert ta_adapter.KEY_COLUMN not in after and "\n" not in after


def test_bad_characters_through_the_attacker():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = BadCharacters2021.build(wrapper, goal_function_type="targeted_classification", perturbation_type="invisible",
                                     target_class=0, popsize=4, maxiter=2, perturbs=2)
    fusion.model.rows.clear()
    results = run_attacker(attack, wrapper.dataset(batch(2), [1, 1]), num_examples=2)
    assert len(results) == 2
    assert_paired_where_tagged(fusion.model)


def test_a_joined_key_in_a_bare_query_gets_the_real_reason():
    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    ex = wrapper.examples(batch(2))
    joined = ex[0][fusion.names[1]] + "\n" + ex[0][ta_adapter.KEY_COLUMN]
    with pytest.raises(Exception, match="joined columns") as info:
        wrapper([joined])
    assert type(info.value).__name__ == "UnsupportedAttackError"


def test_build_text_attack_lists_the_valid_goal_function_types():
    from mmfusion_attacks.text.recipes import build_text_attack

    wrapper = FusionModelWrapper(probe_model())
    with pytest.raises(ValueError, match="targeted_classification") as info:
        build_text_attack("bad-characters", wrapper, goal_function_type="untargeted", perturbation_type="invisible")
    assert "'untargeted'" in str(info.value)
    with pytest.raises(ValueError, match="goal_function_type"):
        build_text_attack("bad-characters", wrapper, perturbation_type="invisible")
    attack = build_text_attack("bad-characters", wrapper, goal_function_type="targeted_classification",
                               perturbation_type="invisible", target_class=0, popsize=4, maxiter=2)
    res = run_attack(attack, batch(1), torch.ones(1, dtype=torch.long))
    assert res.targets.tolist() == [0]


def test_the_attackers_view_of_the_attack_pickles():
    import pickle

    fusion = probe_model()
    wrapper = FusionModelWrapper(fusion)
    attack = DeepWordBugGao2018.build(wrapper)
    attacker = textattack.Attacker(attack, wrapper.dataset(batch(2), [1, 1]), attacker_args())
    clone = pickle.loads(pickle.dumps(attacker.attack))
    result = clone.attack(clone._dataset[0][0], 1)
    assert type(result).__name__ == "SuccessfulAttackResult"


class _DriftingTowers(Towers):
    """Hostile: every fusion step writes the image tower's weight through ``.data``."""

    def fuse(self, features):
        out = super().fuse(features)
        self.image_proj.weight.data.mul_(1.5)
        return out


def test_the_feature_cache_is_checked_before_every_model_call_of_one_query():
    """One query of several rows in calls of ``batch_size`` rows: a model that writes the image tower's
    weights while it runs invalidates the cached features before the next call, not only the next query."""

    def scores(cache):
        torch.manual_seed(0)
        fusion = FusionModel(_DriftingTowers(), [IMAGE, "text"], num_classes=2).eval()
        wrapper = FusionModelWrapper(fusion, batch_size=1, cache_features=cache)
        ex = wrapper.examples(towers_batch(1))[0]
        return wrapper([(t, ex["example"]) for t in ["one two three", "one two four", "one two five"]]), wrapper.uses_towers

    cached, uses_towers = scores(True)
    assert uses_towers
    assert torch.equal(cached, scores(False)[0])
