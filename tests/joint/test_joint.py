"""Joint attacks and the worst case over modality subsets, on models built so the answers are known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmfusion_attacks import FusionModel, Modality
from mmfusion_attacks.errors import EmptySubsetError, UnknownModalityError, UnsupportedAttackError
from mmfusion_attacks.joint import JointAttack, ModalityAttack, worst_case_over_subsets

pytest.importorskip("mmfusion_attacks.adapters.textattack")

IMAGE = Modality("image", "image", 1, valid_range=(0.0, 1.0)).replace(eps=0.1)
#: a spectrogram (1, frequency, time) in [-1, 1]: the third modality
AUDIO = Modality("audio", "image", 1, valid_range=(-1.0, 1.0), description="spectrogram").replace(eps=0.1)


class ThreeWay(nn.Module):
    """s = -2.5 + 6 mean(image) + 0.5 [an alarm word] + 3 mean(audio); logits (-s, s).

    Clean (image mean 0.5, an alarm word, silent audio): s = 1.0. Within the budgets image alone lowers s
    by 0.6, the text by 0.5 (removing the alarm word), the audio by 0.3: only image + text (1.1) or all
    three (1.4) flip it. Records the image mean of every row scored with a text query."""

    ALARM = ("alarm", "danger")

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[float, str]] = []

    def forward(self, image, text, audio):
        img = image.flatten(1).mean(1)
        words = torch.tensor([0.5 if any(w in self.ALARM for w in t.lower().split()) else 0.0 for t in text])
        s = -2.5 + 6 * img + words + 3 * audio.flatten(1).mean(1) + self.dummy
        self.seen.extend(zip(img.tolist(), text))
        return torch.stack([-s, s], 1)


def three_way() -> FusionModel:
    return FusionModel(ThreeWay(), [IMAGE, "text", AUDIO], num_classes=2).eval()


def three_batch(n: int = 3) -> dict:
    return {
        "image": torch.full((n, 1, 4, 8), 0.5),
        "text": ["the scan shows an alarm sign today"] * n,
        "audio": torch.zeros(n, 1, 4, 8),
    }


PLAN = [
    ModalityAttack("image", "pgd", 0.1, steps=5),
    ModalityAttack("text", "deepwordbug", 200),
    ModalityAttack("audio", "pgd", 0.1, steps=5),
]


def test_only_image_and_text_together_break_it_and_the_report_says_so():
    fusion = three_way()
    x = three_batch()
    report = worst_case_over_subsets(fusion, PLAN, x, torch.ones(3, dtype=torch.long))
    by = {r["subset"]: r for r in report.rows()}
    for single in ("image", "text", "audio", "image+audio", "text+audio"):
        assert by[single]["success_rate"] == 0.0, (single, by[single])
    assert by["image+text"]["success_rate"] == 1.0 and by["image+text+audio"]["success_rate"] == 1.0
    assert report.smallest() == [("image", "text")] * 3
    assert bool(report.broken().all())
    assert by["image+text"]["robust_accuracy"] == 0.0 and by["image"]["robust_accuracy"] == 1.0
    assert len(report.subsets) == 7


def test_sequential_second_step_sees_the_first_steps_adversarial_image_and_holds_the_rest():
    fusion = three_way()
    x = three_batch(2)
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in x.items()}
    atk = JointAttack(fusion, PLAN[:2])  # image, then text
    fusion.model.seen.clear()
    res = atk(x, torch.ones(2, dtype=torch.long))
    # every query that carried a perturbed text carried the adversarial image (mean 0.4), never the clean one
    text_queries = [(m, t) for m, t in fusion.model.seen if t != before["text"][0]]
    assert text_queries and all(abs(m - 0.4) < 1e-5 for m, _ in text_queries)
    assert res.success.all() and res.extras["succeeded_at"] == ["DEEPWORDBUG 200 on text"] * 2
    assert torch.equal(res.inputs["audio"], x["audio"])  # not planned: bit-identical
    assert torch.equal(x["image"], before["image"]) and x["text"] == before["text"]  # caller data untouched
    assert float(res.norms["image"]["linf"].max()) <= 0.1 + 1e-6
    assert (res.norms["text"]["words_changed"] >= 1).all()
    assert res.budget["image"][1] == pytest.approx(0.1) and res.attacked == ("image", "text")


def test_alternating_rounds_keep_each_budget_against_the_clean_input():
    fusion = three_way()
    plan = [ModalityAttack("image", "pgd", 0.05, steps=5), ModalityAttack("audio", "fgsm", 0.05, toolkit="torchattacks")]
    atk = JointAttack(fusion, plan, orchestration="alternating", rounds=3, order=["audio", "image"])
    res = atk(three_batch(2), torch.ones(2, dtype=torch.long))
    assert float(res.norms["image"]["linf"].max()) <= 0.05 + 1e-6
    assert float(res.norms["audio"]["linf"].max()) <= 0.05 + 1e-6
    assert not res.success.any()  # 0.3 + 0.15 < 1.0 whatever the rounds
    assert len(atk.steps) == 2


def test_tensor_modalities_sharing_a_recipe_run_as_one_gradient_joint_attack():
    fusion = three_way()
    atk = JointAttack(fusion, [PLAN[0], PLAN[2]])
    assert len(atk.steps) == 1 and atk.steps[0].modalities == ("image", "audio")
    res = atk(three_batch(2), torch.ones(2, dtype=torch.long))
    assert float(res.norms["image"]["linf"].max()) == pytest.approx(0.1, abs=1e-6)
    assert float(res.norms["audio"]["linf"].max()) == pytest.approx(0.1, abs=1e-6)
    assert res.inputs["text"] == three_batch(2)["text"]


class Interaction(nn.Module):
    """s = -2.6 + 6 m_img + 20 m_aud (m_img - 0.5): FGSM on the image alone flips it (s = -0.08); FGSM on
    image + audio at once moves the audio along its clean gradient, which the image step then turns
    against it (s = +0.08): the raw optimiser is weaker on the superset."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, image, audio):
        m_img, m_aud = image.flatten(1).mean(1), audio.flatten(1).mean(1)
        s = -2.6 + 6 * m_img + 20 * m_aud * (m_img - 0.5) + self.dummy
        return torch.stack([-s, s], 1)


def test_a_superset_is_never_weaker_than_its_subsets_and_the_optimiser_finding_is_flagged():
    fusion = FusionModel(Interaction(), [IMAGE, AUDIO], num_classes=2).eval()
    x = {"image": torch.full((2, 1, 4, 8), 0.52), "audio": torch.zeros(2, 1, 4, 8)}
    plan = [ModalityAttack("image", "fgsm", 0.1), ModalityAttack("audio", "fgsm", 0.1)]
    report = worst_case_over_subsets(fusion, plan, x, torch.ones(2, dtype=torch.long))
    both = ("image", "audio")
    assert bool(report.own[("image",)].success.all()) and not bool(report.own[both].success.any())
    assert bool(report.success[both].all())  # taken from the image-only run
    assert report.weaker[both] == [0, 1] and report.source[both] == [("image",), ("image",)]
    assert any(f.startswith("optimiser-weaker: image+audio") for f in report.flags)
    adv = report.adversarial(both, 0)
    assert fusion.predict(adv).item() == 0


def test_monotone_on_a_random_model():
    torch.manual_seed(0)

    class Random(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 3), nn.Linear(32, 3)

        def forward(self, image, audio):
            return torch.tanh(self.a(image.flatten(1))) * 3 + self.b(audio.flatten(1)) * torch.sigmoid(self.a(image.flatten(1)))

    fusion = FusionModel(Random(), [IMAGE, AUDIO], num_classes=3).eval()
    g = torch.Generator().manual_seed(1)
    x = {"image": torch.rand(16, 1, 4, 8, generator=g), "audio": torch.rand(16, 1, 4, 8, generator=g) * 2 - 1}
    report = worst_case_over_subsets(fusion, [ModalityAttack("image", "pgd", 0.05, steps=3), ModalityAttack("audio", "fgsm", 0.05)], x)
    for s in report.subsets:
        for t in report.subsets:
            if set(s) < set(t):
                assert bool((report.success[s] <= report.success[t]).all())


def test_skipping_rows_a_subset_broke_gives_the_same_worst_case_for_less_work():
    """skip_broken (the optimised path) vs every subset attacking every row: equal success and
    predictions per subset, fewer rows attacked, skipped rows reported from the subset that broke them."""
    torch.manual_seed(0)

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 3), nn.Linear(32, 3)
            self.rows = 0

        def forward(self, image, audio):
            self.rows += len(image)
            return self.a(image.flatten(1)) + self.b(audio.flatten(1))

    net = Counting()
    fusion = FusionModel(net, [IMAGE, AUDIO], num_classes=3).eval()
    g = torch.Generator().manual_seed(3)
    x = {"image": torch.rand(24, 1, 4, 8, generator=g), "audio": torch.rand(24, 1, 4, 8, generator=g) * 2 - 1}
    no_start = {"random_start": False}  # rows independent of the batch they run in
    plan = [ModalityAttack("image", "pgd", 0.08, steps=3, options=no_start), ModalityAttack("audio", "pgd", 0.08, steps=3, options=no_start)]
    rows = {}
    reports = {}
    for skip in (False, True):
        net.rows = 0
        reports[skip] = worst_case_over_subsets(fusion, plan, x, skip_broken=skip)
        rows[skip] = net.rows
    full, fast = reports[False], reports[True]
    both = ("image", "audio")
    broken_by_one = fast.success[("image",)] | fast.success[("audio",)]
    assert 0 < int(broken_by_one.sum()) < 24  # the test needs rows of both kinds
    for s in full.subsets:
        assert torch.equal(full.success[s], fast.success[s])
        assert fast.weaker.get(s, []) == [i for i in full.weaker.get(s, []) if not bool(broken_by_one[i])]
    for i in range(24):
        assert fast.own[both].extras["succeeded_at"][i] == ("skipped" if bool(broken_by_one[i] & fast.clean_correct[i]) else full.own[both].extras["succeeded_at"][i])
        if not bool(broken_by_one[i]):
            assert torch.equal(fast.own[both].inputs["image"][i], full.own[both].inputs["image"][i])
        else:
            assert fast.source[both][i] is not None and torch.equal(fast.adversarial(both, i)["image"], full.adversarial(fast.source[both][i], i)["image"])
    assert rows[True] < rows[False]


def test_clear_errors_before_any_work():
    fusion = three_way()
    fusion.model.seen.clear()
    with pytest.raises(UnsupportedAttackError, match="'text' is text: 'jsma' is a tensor attack"):
        JointAttack(fusion, [ModalityAttack("text", "jsma")])
    with pytest.raises(UnsupportedAttackError, match="'deepwordbug' is a text attack"):
        JointAttack(fusion, [ModalityAttack("image", "deepwordbug")])
    with pytest.raises(UnknownModalityError, match="'depth', which this model does not have"):
        JointAttack(fusion, [ModalityAttack("depth", "pgd", 0.1)])
    with pytest.raises(UnknownModalityError, match=r"names \['depth'\]"):
        worst_case_over_subsets(fusion, PLAN, three_batch(), subsets=[("image", "depth")])
    with pytest.raises(EmptySubsetError):
        worst_case_over_subsets(fusion, PLAN, three_batch(), subsets=[()])
    with pytest.raises(ValueError, match="appears twice"):
        JointAttack(fusion, [PLAN[0], PLAN[0]])
    with pytest.raises(ValueError, match="rounds"):
        JointAttack(fusion, PLAN, rounds=0)
    assert not fusion.model.seen


def test_grid_runs_joint_and_worst_case_cells_and_keeps_supersets_at_least_as_strong():
    from mmfusion_attacks.harness.grid import GridSpec, JointCell, run_grid, worst_case_cells

    fusion = three_way()
    x = three_batch(4)
    cells = [JointCell("image -> text", tuple(PLAN[:2]))] + worst_case_cells("worst", PLAN)
    grid = run_grid(fusion, [(x, torch.ones(4, dtype=torch.long))], GridSpec(attacks=(), combos=cells), progress=False)
    rows = {r["cell"]: r for r in grid.rows()}
    assert rows["image -> text"]["success_rate"] == 1.0 and rows["image -> text"]["words_changed_per_example"] >= 1
    assert rows["worst: image"]["success_rate"] == 0.0 and rows["worst: image+text"]["success_rate"] == 1.0
    assert rows["worst: image+text+audio"]["success_rate"] == 1.0
    for a in rows.values():
        for b in rows.values():
            if a["cell"].startswith("worst:") and b["cell"].startswith("worst:"):
                sa, sb = set(a["cell"][7:].split("+")), set(b["cell"][7:].split("+"))
                if sa < sb:
                    assert a["success_rate"] <= b["success_rate"]
    assert rows["worst: image+text"]["image_linf_mean"] <= 0.1 + 1e-6


def test_grid_worst_case_on_a_model_that_lacks_a_modality():
    from mmfusion_attacks.harness.grid import GridSpec, run_grid, worst_case_cells

    fusion = FusionModel(Interaction(), [IMAGE, AUDIO], num_classes=2).eval()
    x = {"image": torch.full((2, 1, 4, 8), 0.52), "audio": torch.zeros(2, 1, 4, 8), "text": ["an alarm"] * 2}
    plan = [ModalityAttack("image", "fgsm", 0.1), ModalityAttack("audio", "fgsm", 0.1), ModalityAttack("text", "deletion", 0.5)]
    grid = run_grid(fusion, [(x, torch.ones(2, dtype=torch.long))], GridSpec(attacks=(), combos=worst_case_cells("w", plan)), progress=False)
    rows = {r["cell"]: r for r in grid.rows()}
    assert rows["w: image"]["success_rate"] == 1.0 and rows["w: image+audio"]["success_rate"] == 1.0
    assert rows["w: image+audio"]["weaker_than_a_subset"] == 2 and "optimiser-weaker" in rows["w: image+audio"]["flags"]
    assert rows["w: text"]["applies"] is False
    # a superset the model reads only part of is attacked on that part: never weaker than it
    assert rows["w: image+text"]["applies"] is True and rows["w: image+text"]["success_rate"] == 1.0
    assert "reads only image" in rows["w: image+text"]["flags"]


# the joint-attacks preset (a spec run by the harness): tests/harness/test_joint_benchmark.py


def test_gradient_joint_over_an_image_and_a_waveform():
    """Modalities of different kinds (an image and an (N, T) waveform) in one toolkit attack."""

    class ImageWave(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, image, audio):
            s = -2.0 + 6 * image.flatten(1).mean(1) + 30 * audio.mean(1) + self.dummy
            return torch.stack([-s, s], 1)

    wave = Modality("audio", "tensor", shape=(None,), valid_range=(-1.0, 1.0)).replace(eps=0.02)
    fusion = FusionModel(ImageWave(), [IMAGE, wave], num_classes=2).eval()
    x = {"image": torch.full((2, 1, 4, 8), 0.5), "audio": torch.zeros(2, 160)}
    atk = JointAttack(fusion, [ModalityAttack("image", "pgd", 0.1, steps=5), ModalityAttack("audio", "pgd", 0.02, steps=5)])
    assert len(atk.steps) == 1
    res = atk(x, torch.ones(2, dtype=torch.long))
    assert float(res.norms["image"]["linf"].max()) == pytest.approx(0.1, abs=1e-6)
    assert float(res.norms["audio"]["linf"].max()) == pytest.approx(0.02, abs=1e-6)
    assert res.success.all()  # 0.6 + 0.6 > 1.0: only both together
    report = worst_case_over_subsets(fusion, atk.plan, x, torch.ones(2, dtype=torch.long))
    assert report.smallest() == [("image", "audio")] * 2


def test_synthetic_trimodal_default_is_deterministic_and_the_fused_model_learns_it():
    from mmfusion_attacks.data import create_dataset
    from mmfusion_attacks.models import create_model
    from mmfusion_attacks.models.trimodal import train_trimodal

    a, ya = create_dataset("synthetic-trimodal", split="test", size=40).tensors()
    b, yb = create_dataset("synthetic-trimodal", split="test", size=40).tensors()
    assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"] and torch.equal(a["audio"], b["audio"])
    assert a["image"].shape == (40, 1, 28, 28) and a["audio"].shape == (40, 1, 16, 32) and ya.tolist() == yb.tolist()
    for name in ("image", "audio"):
        assert 0 <= float(a[name].min()) and float(a[name].max()) <= 1, name
    x, y = create_dataset("synthetic-trimodal", split="train", size=400).tensors()
    fusion = train_trimodal(create_model("trimodal-fusion"), x, y, epochs=15)
    assert float((fusion.predict(a) == ya).float().mean()) > 0.7  # chance 0.25
    assert fusion.model.towers == ("image", "text", "audio")


def test_worst_case_on_a_segmenter_takes_the_most_fooled_pixels_per_example(trained_segmenter):
    from conftest import make_batch, rule_labels

    from mmfusion_attacks.harness.grid import GridSpec, run_grid, worst_case_cells

    x = make_batch(n=4, seed=7)
    labels = rule_labels(x)
    plan = [ModalityAttack("rgb", "pgd", 8 / 255, steps=3), ModalityAttack("ir", "fgsm", 8 / 255)]
    report = worst_case_over_subsets(trained_segmenter, plan, x, labels, success_fraction=0.2)
    both = ("rgb", "ir")
    for s in report.subsets:
        for t in report.subsets:
            if set(s) < set(t):
                assert bool((report.success[s] <= report.success[t]).all())
    scores = {s: report.own[s].score for s in report.subsets}
    for i in range(4):
        src = report.source[both][i]
        taken = scores[src][i] if src else scores[both][i]
        assert float(taken) >= max(float(scores[s][i]) for s in report.subsets)
    assert report.own[both].adv_pred.shape == labels.shape
    grid = run_grid(trained_segmenter, [(x, labels)], GridSpec(attacks=(), combos=worst_case_cells("w", plan)), progress=False)
    acc = {r["cell"]: r["accuracy"] for r in grid.rows()}
    assert acc["w: rgb+ir"] <= min(acc["w: rgb"], acc["w: ir"]) + 1e-9


# ------------------------------------------------------------------------------ no silent wrong results


class Overshoot(nn.Module):
    """s = 0.3 - 6 (0.5 - m_img) + 100 (m_aud + 0.01)^2: image FGSM (eps 0.1) alone flips it (s = -0.29);
    the audio FGSM step, taken given the adversarial image, overshoots the bowl and flips it back."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.shift = 0.0  # set by a test: the model changes between calls

    def forward(self, image, audio):
        mi, ma = image.flatten(1).mean(1), audio.flatten(1).mean(1)
        s = 0.3 - 6 * (0.5 - mi) + 100 * (ma + 0.01) ** 2 + self.dummy + self.shift
        return torch.stack([-s, s], 1)


OVERSHOOT_PLAN = [ModalityAttack("image", "fgsm", 0.1), ModalityAttack("audio", "fgsm", 0.1, toolkit="art")]


def test_without_stop_at_success_a_later_step_never_undoes_an_earlier_success():
    fusion = FusionModel(Overshoot(), [IMAGE, AUDIO], num_classes=2).eval()
    x = {"image": torch.full((2, 1, 4, 8), 0.5), "audio": torch.zeros(2, 1, 4, 8)}
    y = torch.ones(2, dtype=torch.long)
    for stop in (True, False):
        res = JointAttack(fusion, OVERSHOOT_PLAN, stop_at_success=stop)(x, y)
        assert res.success.tolist() == [True, True], stop
        assert res.extras["succeeded_at"] == ["FGSM 0.1 on image"] * 2 and not res.flags
        assert torch.equal(res.inputs["audio"], x["audio"])  # the image step's adversarial, not the overshoot
        assert bool((fusion.predict(res.inputs) == 0).all())
    report = worst_case_over_subsets(fusion, OVERSHOOT_PLAN, x, y, stop_at_success=False)
    assert bool(report.own[("image", "audio")].success.all())


def test_a_row_whose_final_output_is_not_fooled_names_no_step_and_is_flagged():
    class Drifting(JointAttack):  # the model changes after the step that fooled it
        def _run_step(self, step, inputs, labels):
            result = super()._run_step(step, inputs, labels)
            self.fusion.model.shift = 10.0
            return result

    fusion = FusionModel(Overshoot(), [IMAGE, AUDIO], num_classes=2).eval()
    x = {"image": torch.full((2, 1, 4, 8), 0.5), "audio": torch.zeros(2, 1, 4, 8)}
    res = Drifting(fusion, OVERSHOOT_PLAN[:1])(x, torch.ones(2, dtype=torch.long))
    assert res.success.tolist() == [False, False]
    assert res.extras["succeeded_at"] == [None, None]
    assert any(f.startswith("unstable: rows [0, 1]") for f in res.flags)


def test_a_merged_group_fills_a_missing_budget_from_the_threat_model():
    fusion = three_way()
    atk = JointAttack(fusion, [ModalityAttack("image", "pgd", 0.05, steps=3), ModalityAttack("audio", "pgd", None, steps=3)])
    assert len(atk.steps) == 1 and atk.steps[0].modalities == ("image", "audio")
    res = atk(three_batch(2), torch.ones(2, dtype=torch.long))
    assert float(res.norms["image"]["linf"].max()) <= 0.05 + 1e-6
    assert float(res.norms["audio"]["linf"].max()) == pytest.approx(0.1, abs=1e-6)  # AUDIO's threat model
    bare = FusionModel(ThreeWay(), [IMAGE, "text", AUDIO.replace(threat=None)], num_classes=2).eval()
    with pytest.raises(UnsupportedAttackError, match="modality 'audio' has no threat model"):
        JointAttack(bare, [ModalityAttack("image", "pgd", 0.05), ModalityAttack("audio", "pgd", None)])


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
@pytest.mark.parametrize("budget", [0.0, float("inf"), float("nan"), -0.1])
def test_a_tensor_budget_must_be_positive_and_finite(toolkit, budget):
    fusion = three_way()
    fusion.model.seen.clear()
    plan = [ModalityAttack("image", "fgsm", 0.1, toolkit=toolkit), ModalityAttack("audio", "fgsm", budget, toolkit=toolkit)]
    with pytest.raises(ValueError, match="modality 'audio'"):
        JointAttack(fusion, plan)
    assert not fusion.model.seen
    zero = FusionModel(ThreeWay(), [IMAGE, "text", AUDIO.replace(eps=0.0)], num_classes=2).eval()
    with pytest.raises(ValueError, match="modality 'audio': a tensor attack needs an eps > 0.*threat model"):
        JointAttack(zero, [ModalityAttack("audio", "fgsm", None, toolkit=toolkit)])


def test_worst_case_refuses_an_order_naming_an_unplanned_modality():
    fusion = three_way()
    fusion.model.seen.clear()
    plan = [ModalityAttack("image", "pgd", 0.1, steps=2), ModalityAttack("audio", "fgsm", 0.1)]
    with pytest.raises(ValueError, match=r"\['audoi'\] not planned"):
        worst_case_over_subsets(fusion, plan, three_batch(2), torch.ones(2, dtype=torch.long), order=["audoi", "image"])
    assert not fusion.model.seen


@pytest.mark.filterwarnings("ignore:textattack.Attack changed nothing")  # a round's share of 20 queries may change no word
def test_a_query_budget_holds_for_all_rounds_together():
    fusion = three_way()
    plan = [ModalityAttack("image", "pgd", 0.02, steps=3), ModalityAttack("text", "deepwordbug", 20)]
    res = JointAttack(fusion, plan, orchestration="alternating", rounds=3)(three_batch(2), torch.ones(2, dtype=torch.long))
    assert res.budget["text"] == ("queries", 20)
    assert 0 < int(res.extras["queries"].max()) <= 20
    with pytest.raises(ValueError, match="modality 'text': a query budget of 2 cannot be split over 3 rounds"):
        JointAttack(fusion, [ModalityAttack("text", "deepwordbug", 2)], orchestration="alternating", rounds=3)


def test_skip_broken_is_refused_for_segmentation():
    from conftest import TinyPackedSegmenter, make_batch, rule_labels

    fusion = FusionModel(TinyPackedSegmenter().eval(), ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=4)
    x = make_batch(n=2, seed=7)
    plan = [ModalityAttack("rgb", "pgd", 8 / 255, steps=2), ModalityAttack("ir", "pgd", 8 / 255, steps=2)]
    with pytest.raises(ValueError, match="skip_broken=True is for classification, the model is segmentation"):
        worst_case_over_subsets(fusion, plan, x, rule_labels(x), skip_broken=True)


def test_a_caption_matcher_is_refused_a_joint_plan_before_any_work():
    from models.test_contrastive import own_encoder

    from mmfusion_attacks.models.contrastive import caption_matching_model

    enc = own_encoder()
    gallery = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    fusion = caption_matching_model(enc, gallery, ["a red bag", "a blue boot", "a green coat"])
    plan = [ModalityAttack("image", "pgd", 0.03, steps=2), ModalityAttack("caption", "deletion", 0.5)]
    with pytest.raises(UnsupportedAttackError, match="CaptionMatcher.*attack one modality at a time"):
        JointAttack(fusion, plan)
    with pytest.raises(UnsupportedAttackError, match="CaptionMatcher"):
        worst_case_over_subsets(fusion, plan, {"image": gallery, "caption": ["a red bag", "a blue boot", "a green coat"]})
    JointAttack(fusion, plan[:1])  # one modality: fine
