"""The main job end to end on a tiny setting, plus its building blocks."""

import pytest
import torch

from mmfusion_attacks import UnsupportedAttackError, run_attack
from mmfusion_attacks.cli import main
from mmfusion_attacks.data import MF_CLASSES, create_dataset
from mmfusion_attacks.demo import format_table, run_demo
from mmfusion_attacks.metrics import SegmentationMetrics
from mmfusion_attacks.models import MODELS, create_model, register_model
from mmfusion_attacks.recipes import list_recipes, make_attack


def test_synthetic_scenes_are_deterministic_and_complementary():
    ds = create_dataset("synthetic-rgbt", split="test", size=40)
    a, b = ds[3], ds[3]
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(ds[3]["rgb"], create_dataset("synthetic-rgbt", split="train", size=40)[3]["rgb"])
    assert ds.synthetic and len(MF_CLASSES) == 9
    people_ir, cone_ir, bg_ir, night_rgb, day_rgb = [], [], [], [], []
    for i in range(40):
        s = ds[i]
        lab, ir = s["labels"], s["ir"][0]
        assert s["rgb"].shape == (3, 48, 64) and s["ir"].shape == (1, 48, 64)
        assert s["rgb"].min() >= 0 and s["rgb"].max() <= 1 and lab.max() < 9
        people_ir += ir[lab == 2].tolist()
        cone_rows = (lab == 7).any(1)
        if cone_rows.any():  # cones vs the background in the same rows (thermal has a vertical ramp)
            cone_ir.append(float(ir[lab == 7].mean()))
            bg_ir.append(float(ir[cone_rows][lab[cone_rows] == 0].mean()))
        (night_rgb if s["night"] else day_rgb).append(float(s["rgb"].mean()))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(people_ir) > mean(bg_ir) + 0.4  # people are hot
    assert cone_ir and abs(mean(cone_ir) - mean(bg_ir)) < 0.03  # cones are invisible in thermal
    assert mean(night_rgb) < 0.5 * mean(day_rgb)  # RGB is dark at night
    with pytest.raises(ValueError, match="split"):
        create_dataset("synthetic-rgbt", split="holdout")


def test_metrics_from_a_confusion_matrix():
    m = SegmentationMetrics(4)
    labels = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    m.update(pred, labels)
    # class 0: TP 1, FN 1 -> IoU 1/2, recall 1/2; class 1: TP 2, FP 1 -> IoU 2/3, recall 1
    assert m.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.macc() == pytest.approx((1 / 2 + 1) / 2)
    assert torch.isnan(m.per_class_iou()[2:]).all()  # absent everywhere: left out of the means
    assert m.miou(include=[1]) == pytest.approx(2 / 3)
    m.update(torch.tensor([[3]]), torch.tensor([[2]]))  # class 2 in labels, never predicted: counts as 0
    assert m.per_class_iou()[2] == 0 and m.per_class_recall()[2] == 0
    assert m.pixel_accuracy() == pytest.approx(3 / 5)
    # class 3 is only predicted: out of the default mean (same class set for every attack), in "union"
    assert m.miou() == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    union = SegmentationMetrics(4, average="union")
    union.update(torch.tensor([[0, 1, 1, 1, 3]]), torch.tensor([[0, 0, 1, 1, 2]]))
    assert union.miou() == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4)
    with pytest.raises(ValueError, match="average"):
        SegmentationMetrics(4, average="macro")


def test_model_registry():
    fusion = create_model("tiny-rgbt-segmenter", num_classes=5)
    out = fusion({"rgb": torch.rand(1, 3, 8, 8), "ir": torch.rand(1, 1, 8, 8)})
    assert out.shape == (1, 5, 8, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny-rgbt-segmenter")(lambda: None)
    with pytest.raises(KeyError, match="unknown model"):
        create_model("nope")
    assert "tiny-rgbt-segmenter" in MODELS


def test_recipes_configure_toolkit_attacks():
    fusion = create_model("tiny-rgbt-segmenter", num_classes=9).eval()
    batch = {"rgb": torch.rand(2, 3, 8, 8), "ir": torch.rand(2, 1, 8, 8)}
    assert {("fgsm", "art"), ("pgd", "torchattacks")} <= set(list_recipes())
    ta = make_attack("pgd", fusion, "ir", toolkit="torchattacks", eps=8 / 255, steps=3)
    assert type(ta).__name__ == "PGD" and ta.eps == 8 / 255 and ta.alpha == pytest.approx(2.5 * 8 / 255 / 3)
    for toolkit in ("torchattacks", "art"):  # per-modality budgets with both toolkits
        atk = make_attack("pgd", fusion, ["rgb", "ir"], toolkit=toolkit, eps={"rgb": 4 / 255, "ir": 8 / 255}, steps=5)
        result = run_attack(atk, batch)
        assert result.budget == {"rgb": ("inf", pytest.approx(4 / 255)), "ir": ("inf", pytest.approx(8 / 255))}
        assert float(result.norms["rgb"]["linf"].max()) <= 4 / 255 + 1e-6
        assert 4 / 255 < float(result.norms["ir"]["linf"].max()) <= 8 / 255 + 1e-6
    with pytest.raises(UnsupportedAttackError, match="proportional"):
        make_attack("pgd", fusion, ["rgb", "ir"], toolkit="torchattacks", eps={"rgb": 4 / 255, "ir": 8 / 255}, step_size=1 / 255)
    default = make_attack("fgsm", fusion, "rgb", toolkit="art")  # eps from the modality's threat model
    assert default.eps == pytest.approx(8 / 255)
    with pytest.raises(KeyError, match="no recipe"):
        make_attack("nope", fusion, "rgb")


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_demo_runs_end_to_end(toolkit):
    result = run_demo(toolkit=toolkit, attacks=("fgsm",), eps_255=(16,), n_eval=4, batch_size=4, train_steps=60, pgd_steps=2)
    assert result["meta"]["data"].startswith("SYNTHETIC")
    rows = {r["attacked"]: r for r in result["rows"]}
    assert set(rows) == {"RGB", "IR", "RGB+IR"}
    for r in rows.values():
        assert r["mIoU"] < result["clean"]["mIoU"]
        assert r["IoU_R"] == pytest.approx(r["mIoU"] / result["clean"]["mIoU"])
    table = format_table(result)
    assert "SYNTHETIC" in table and "RGB+IR" in table and "IoU_R" in table


def test_cli_demo(capsys, tmp_path):
    code = main(["demo", "--attacks", "fgsm", "--eps", "8", "--n-eval", "2", "--batch-size", "2",
                 "--train-steps", "5", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert (tmp_path / "demo.json").exists()


def test_cli_rgbt_delegates_to_the_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMFUSION_CACHE", str(tmp_path / "cache"))
    code = main(["rgbt", "--model", "tiny-rgbt-segmenter", "--limit", "2", "--batch-size", "2", "--steps", "1", "--eps", "10",
                 "--train-steps", "2", "--size", "32", "32", "--analyses", "grid", "--qualitative", "0", "--out", str(tmp_path / "o")])
    assert code == 0 and (tmp_path / "o" / "summary.json").exists() and (tmp_path / "o" / "report.html").exists()
    assert "MFNet study's grid" in capsys.readouterr().out
