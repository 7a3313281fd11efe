"""The grid runner: streamed evaluation, labels, rows, transfer, and the report files."""

import gc
import json
import weakref

import pytest
import torch
from conftest import make_batch, rule_labels

from mmfusion_attacks.harness import GridSpec, run_grid, run_transfer
from mmfusion_attacks.harness.report import (
    MF_PALETTE,
    colorize,
    format_study_table,
    plot_curves,
    save_qualitative,
    save_rows,
)
from mmfusion_attacks.models.wrappers import at_scale

SPEC = GridSpec(attacks=("fgsm", "pgd"), eps_255=(8, 32), subsets=(("rgb",), ("ir",), ("rgb", "ir")), steps=3)


def test_grid_rows_with_ground_truth(trained_segmenter):
    batches = [(b, rule_labels(b)) for b in (make_batch(n=4, seed=s) for s in (10, 11))]
    result = run_grid(trained_segmenter, batches, SPEC, progress=False)
    assert result.labels_source == "ground truth"
    rows = result.rows()
    assert len(rows) == 12 and {r["attacked"] for r in rows} == {"RGB", "IR", "RGB+IR"}
    clean = result.clean.miou()
    for r in rows:
        assert r["IoU_R"] == pytest.approx(r["mIoU"] / clean)
        assert len(r["per_class_IoU"]) == 4
    big = {(r["attack"], r["attacked"]): r["mIoU"] for r in rows if r["eps_255"] == 32}
    assert big[("PGD", "RGB+IR")] < clean
    table = format_study_table(rows, result.clean_summary(), ["header line"])
    assert table.splitlines()[0] == "header line" and "RGB+IR" in table and "PGD eps 32/255" in table


def test_grid_excluding_a_class(trained_segmenter):
    b = make_batch(n=4, seed=12)
    result = run_grid(trained_segmenter, [(b, rule_labels(b))], GridSpec(attacks=("fgsm",), eps_255=(8,), subsets=(("ir",),)), progress=False)
    with_all, without_0 = result.clean_summary(), result.clean_summary(include=[1, 2, 3])
    iou = result.clean.per_class_iou()
    assert without_0["mIoU"] == pytest.approx(float(iou[1:].nanmean()))
    assert with_all["mIoU"] == pytest.approx(float(iou.nanmean()))


def test_pseudo_labels_when_batches_have_none(trained_segmenter):
    result = run_grid(trained_segmenter, [(make_batch(n=2), None)], GridSpec(attacks=("fgsm",), eps_255=(8,)), progress=False)
    assert result.labels_source.startswith("pseudo") and result.clean.miou() == pytest.approx(1.0)


def test_evaluation_is_streamed(trained_segmenter):
    """Memory does not grow with the number of images: at most one batch is alive at a time."""
    alive, peak = set(), [0]

    def stream():
        for s in range(6):
            b = make_batch(n=2, seed=s)
            token = b["rgb"]
            alive.add(id(token))
            weakref.finalize(token, alive.discard, id(token))
            gc.collect()
            peak[0] = max(peak[0], len(alive))
            yield b, rule_labels(b)
            del b, token

    run_grid(trained_segmenter, stream(), GridSpec(attacks=("fgsm",), eps_255=(8,), subsets=(("ir",),)), progress=False)
    assert peak[0] <= 2


def test_transfer_matrix(trained_segmenter):
    b = make_batch(n=4, seed=13, size=16)
    models = {"100%": trained_segmenter, "50%": at_scale(trained_segmenter, 0.5, size_multiple=1)}
    values = run_transfer(models, models, [(b, rule_labels(b))], attack="fgsm", eps_255=32, progress=False)
    assert set(values) == {("100%", "100%"), ("100%", "50%"), ("50%", "100%"), ("50%", "50%")}
    assert values[("100%", "100%")] < 1.0  # white box hurts


def test_report_files(tmp_path):
    rows = [
        {"attack": a, "eps_255": e, "attacked": m, "mAcc": 0.5, "mIoU": 0.4, "IoU_R": 0.8, "per_class_IoU": [0.1]}
        for a in ("FGSM", "PGD") for e in (10, 20) for m in ("RGB", "IR", "RGB+IR")
    ]
    j, c = save_rows(rows, tmp_path, "grid", {"clean": {"mIoU": 0.5}})
    assert json.loads(j.read_text())["clean"]["mIoU"] == 0.5
    assert c.read_text().splitlines()[0].startswith("attack,eps_255,attacked")
    fig = plot_curves(rows, tmp_path / "fig.png", title="t")
    assert fig.stat().st_size > 10_000
    png = save_qualitative(tmp_path / "q.png", torch.rand(3, 16, 16), torch.rand(1, 16, 16),
                           torch.zeros(16, 16, dtype=torch.long), torch.ones(16, 16, dtype=torch.long), "caption")
    assert png.stat().st_size > 1_000
    assert (colorize(torch.tensor([[2]])) == MF_PALETTE[2]).all()
