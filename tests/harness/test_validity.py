"""Validity checks (Carlini et al. 2019) over result rows: each check fails where it should and only there."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from mmfusion_attacks.harness.validity import (
    CHECK_NAMES,
    Check,
    annotate_rows,
    check_experiment,
    failed,
    format_checks,
)


def row(cell: str, kind: str = "attack", attack: str | None = "fgsm", eps: float | None = 8 / 255, attacked=("rgb",),
        *, steps: int | None = None, toolkit: str | None = "torchattacks", group: str | None = None, applies: bool = True,
        **scores: float) -> dict[str, Any]:
    return {"cell": cell, "kind": kind, "attack": attack, "toolkit": toolkit, "eps": eps, "steps": steps,
            "attacked": list(attacked), "group": group, "applies": applies, "flags": [], **scores}


def mfnet_like() -> dict[str, Any]:
    """Segmentation on RGB-T: only the real FGSM-on-both mIoU curve (official MFNet) is wrong."""
    e = [10 / 255, 20 / 255, 40 / 255]
    rows = [
        row(f"FGSM {k}/255 on RGB+IR", eps=x, attacked=("rgb", "ir"), accuracy=0.30, mIoU=m)
        for k, x, m in zip((10, 20, 40), e, (0.168, 0.171, 0.180))
    ] + [
        row(f"FGSM {k}/255 on RGB", eps=x, accuracy=0.5, mIoU=m) for k, x, m in zip((10, 20, 40), e, (0.30, 0.25, 0.22))
    ] + [
        row(f"PGD {k}/255 on RGB+IR", attack="pgd", steps=10, eps=x, attacked=("rgb", "ir"), accuracy=0.1, mIoU=m)
        for k, x, m in zip((10, 20, 40), e, (0.05, 0.03, 0.02))
    ] + [
        row("sanity PGD 255/255 on RGB+IR", kind="sanity", attack="pgd", steps=50, eps=1.0, attacked=("rgb", "ir"),
            accuracy=0.01, mIoU=0.0),
        row("FGSM 10/255 on depth", eps=e[0], attacked=("depth",), applies=False, accuracy=0.9, mIoU=0.55),
    ]
    return {"name": "mfnet", "task": "segmentation", "metric": "mIoU", "clean": {"accuracy": 0.9, "mIoU": 0.55},
            "modalities": ["rgb", "ir"], "rows": rows, "transfer": None}


def consistent_classification() -> dict[str, Any]:
    e = [4 / 255, 8 / 255]
    rows = []
    for sub, base in ((("rgb",), 0.6), (("ir",), 0.7), (("rgb", "ir"), 0.4)):
        name = "+".join(sub)
        for x, d in zip(e, (0.0, 0.1)):
            rows.append(row(f"FGSM {x * 255:g}/255 on {name}", eps=x, attacked=sub, accuracy=base - d))
            rows.append(row(f"PGD {x * 255:g}/255 on {name}", attack="pgd", steps=10, eps=x, attacked=sub,
                            accuracy=base - d - 0.2))
    rows += [
        row("worst case: rgb", kind="worst-case", attack=None, eps=None, attacked=("rgb",), group="worst case", accuracy=0.3),
        row("worst case: ir", kind="worst-case", attack=None, eps=None, attacked=("ir",), group="worst case", accuracy=0.4),
        row("worst case: rgb+ir", kind="worst-case", attack=None, eps=None, attacked=("rgb", "ir"), group="worst case",
            accuracy=0.1),
        row("sanity", kind="sanity", attack="pgd", steps=100, eps=1.0, attacked=("rgb", "ir"), accuracy=0.0),
        row("FGSM on audio", eps=e[0], attacked=("audio",), accuracy=0.91),
        row("FGSM on depth", eps=e[0], attacked=("depth",), applies=False, accuracy=0.91),
    ]
    transfer = {"values": {"A -> A": 0.1, "A -> B": 0.5, "B -> A": 0.4, "B -> B": 0.2},
                "sources": ["A", "B"], "targets": ["A", "B"], "metric": "accuracy"}
    return {"name": "rgbt", "task": "classification", "metric": "accuracy", "clean": {"accuracy": 0.91},
            "modalities": ["rgb", "ir", "audio"], "ignored": ["audio"], "rows": rows, "transfer": transfer}


def names(checks: list[Check]) -> set[str]:
    return {c.name for c in checks}


def test_mfnet_fgsm_curve_flagged_and_only_that() -> None:
    checks = check_experiment(mfnet_like())
    bad = failed(checks)
    assert len(bad) == 1
    (c,) = bad
    assert c.name == "monotone-eps"
    assert "0.168 (10/255) -> 0.171 (20/255) -> 0.18 (40/255)" in c.message
    assert "rgb+ir" in c.message and "FGSM" in c.message
    assert "SegPGD" in c.remedy and "unlabeled" in c.remedy
    assert set(c.cells) == {"FGSM 10/255 on RGB+IR", "FGSM 20/255 on RGB+IR", "FGSM 40/255 on RGB+IR"}
    # the other checks were evaluated and passed
    assert {"iterative-vs-single-step", "superset-vs-subset", "unbounded-sanity", "ignored-modality"} <= names(checks)


def test_consistent_classification_passes_everything() -> None:
    checks = check_experiment(consistent_classification())
    assert failed(checks) == []
    assert names(checks) == set(CHECK_NAMES)
    text = format_checks(checks)
    assert "WARNING" not in text and text.endswith(f"validity checks: {len(checks)} passed, 0 failed")


def _only_failure(exp: dict[str, Any], **kw: Any) -> Check:
    bad = failed(check_experiment(exp, **kw))
    assert len(bad) == 1, [c.message for c in bad]
    return bad[0]


def test_monotone_eps_classification_remedy_and_tolerance() -> None:
    exp = consistent_classification()
    exp["rows"][2]["accuracy"] = 0.65  # FGSM 8/255 on rgb above 4/255 (0.6)
    c = _only_failure(exp)
    assert c.name == "monotone-eps" and "restarts" in c.remedy
    assert failed(check_experiment(exp, tolerance=0.06)) == []


def test_iterative_weaker_than_single_step() -> None:
    exp = consistent_classification()
    exp["rows"][1]["accuracy"] = 0.61  # PGD 4/255 on rgb above FGSM 4/255 on rgb (0.6)
    bad = failed(check_experiment(exp))
    assert names(bad) == {"iterative-vs-single-step"}
    assert bad[0].cells == ("PGD 4/255 on rgb", "FGSM 4/255 on rgb")
    assert "0.61 > 0.6" in bad[0].message


def test_ifgsm2_compared_with_fgsm2() -> None:
    exp = {"task": "classification", "metric": "accuracy", "clean": {"accuracy": 0.9}, "modalities": ["rgb"],
           "rows": [row("fgsm2", attack="fgsm2", accuracy=0.3), row("ifgsm2", attack="IFGSM2", steps=5, accuracy=0.4),
                    row("pgd", attack="pgd", steps=5, accuracy=0.2)]}
    bad = failed(check_experiment(exp))
    assert [(c.name, c.cells) for c in bad] == [("iterative-vs-single-step", ("ifgsm2", "fgsm2"))]


def test_whitebox_weaker_than_transfer() -> None:
    exp = consistent_classification()
    exp["transfer"]["values"]["B -> B"] = 0.6
    c = _only_failure(exp)
    assert c.name == "whitebox-vs-transfer"
    assert c.cells == ("B -> B", "A -> B") and "white box 0.6 > transfer 0.5 from A" in c.message


def test_superset_weaker_than_subset_attack_and_worst_case_group() -> None:
    exp = consistent_classification()
    for r in exp["rows"]:
        if r["cell"] == "worst case: rgb+ir":
            r["accuracy"] = 0.35
    c = _only_failure(exp)
    assert c.name == "superset-vs-subset" and c.cells == ("worst case: rgb+ir", "worst case: rgb")
    assert "worst_case_over_subsets" in c.remedy

    exp = consistent_classification()
    exp["rows"][8]["accuracy"] = 0.65  # FGSM 4/255 on rgb+ir: above rgb alone (0.6), below ir alone (0.7)
    bad = failed(check_experiment(exp))
    assert names(bad) == {"superset-vs-subset"}
    assert bad[0].cells == ("FGSM 4/255 on rgb+ir", "FGSM 4/255 on rgb")


@pytest.mark.parametrize(("clean", "acc", "ok"), [(0.91, 0.09, True), (0.91, 0.1, False), (0.3, 0.05, True), (0.3, 0.06, False)])
def test_unbounded_sanity_threshold(clean: float, acc: float, ok: bool) -> None:
    exp = consistent_classification()
    exp["clean"]["accuracy"] = clean
    for r in exp["rows"]:
        if r["kind"] == "sanity":
            r["accuracy"] = acc
        if r["cell"] in ("FGSM on audio", "FGSM on depth"):
            r["accuracy"] = clean
    checks = check_experiment(exp)
    (c,) = [c for c in checks if c.name == "unbounded-sanity"]
    assert c.ok is ok and failed(checks) == ([] if ok else [c])
    if not ok:
        assert c.message.startswith("gradient masking suspected (Carlini et al.") and "Square" in c.remedy


def test_unbounded_sanity_skips_partial_subsets() -> None:
    exp = consistent_classification()
    exp["rows"].append(row("sanity rgb only", kind="sanity", attack="pgd", eps=1.0, accuracy=0.8))
    assert "sanity rgb only" not in {cell for c in check_experiment(exp) for cell in c.cells}


def test_segmentation_sanity_uses_pixel_accuracy() -> None:
    exp = mfnet_like()
    exp["rows"][-2]["accuracy"] = 0.5  # mIoU stays 0, pixel accuracy does not
    bad = failed(check_experiment(exp))
    assert names(bad) == {"monotone-eps", "unbounded-sanity"}


def test_ignored_modality_must_equal_clean() -> None:
    exp = consistent_classification()
    for r in exp["rows"]:
        if r["cell"] == "FGSM on depth":
            r["accuracy"] = 0.9
        if r["cell"] == "FGSM on audio":
            r["accuracy"] = 0.905
    bad = failed(check_experiment(exp))
    assert [(c.name, c.cells) for c in bad] == [("ignored-modality", ("FGSM on audio",)), ("ignored-modality", ("FGSM on depth",))]
    assert "not read by the model" in bad[1].message and "pairing" in bad[1].remedy

    seg = mfnet_like()
    seg["rows"][-1]["mIoU"] = 0.54
    assert ("ignored-modality", ("FGSM 10/255 on depth",)) in [(c.name, c.cells) for c in failed(check_experiment(seg))]


def test_nan_scores_are_skipped() -> None:
    exp = mfnet_like()
    exp["rows"][2]["mIoU"] = math.nan  # the 40/255 point: 0.168 -> 0.171 still rises
    exp["rows"][1]["mIoU"] = float("nan")
    checks = check_experiment(exp)
    mono = [c for c in checks if c.name == "monotone-eps"]
    assert all(c.ok for c in mono)  # the rgb+ir curve has one point left: not evaluated
    assert not any("FGSM 20/255 on RGB+IR" in c.cells for c in checks)
    exp["clean"]["accuracy"] = math.nan
    assert "unbounded-sanity" not in names(check_experiment(exp))
    exp["transfer"] = {"values": {"A -> A": math.nan, "B -> A": 0.3}}
    assert "whitebox-vs-transfer" not in names(check_experiment(exp))


def test_annotate_rows_and_format() -> None:
    exp = mfnet_like()
    before = copy.deepcopy(exp)
    checks = check_experiment(exp)
    rows = annotate_rows(exp, checks)
    assert exp == before  # input untouched
    marked = {r["cell"]: r["checks"] for r in rows}
    assert marked["FGSM 10/255 on RGB+IR"] == ["monotone-eps"] and marked["FGSM 40/255 on RGB+IR"] == ["monotone-eps"]
    assert all(v == [] for k, v in marked.items() if "RGB+IR" not in k or not k.startswith("FGSM"))
    text = format_checks(checks)
    lines = text.splitlines()
    assert lines[0].startswith("WARNING monotone-eps: mIoU rises with eps under FGSM") and ". Remedy: pixel" in lines[0]
    assert lines[-1] == f"validity checks: {len(checks) - 1} passed, 1 failed"
    d = checks[0].to_dict()
    assert set(d) == {"name", "ok", "cells", "message", "remedy"} and isinstance(d["cells"], list)


def test_empty_experiment_has_no_checks() -> None:
    assert check_experiment({"task": "classification", "metric": "accuracy", "clean": {}, "rows": []}) == []
    assert format_checks([]) == "validity checks: 0 passed, 0 failed"


def test_seeds_are_checked_apart_not_pooled():
    """Each seed's PGD curve falls with eps; pooled, seed 1 at the small eps vs seed 0 at the large one
    'rose' and every row was flagged (r5: seeds [0, 2, 3, 4])."""
    rows = []
    for seed, (small, large) in ((0, (0.50, 0.40)), (1, (0.30, 0.20))):
        for eps, acc in ((2 / 255, small), (3 / 255, large)):
            rows.append({**row(f"PGD {eps * 255:g}/255 on RGB (seed {seed})", attack="pgd", steps=4, eps=eps, accuracy=acc), "seed": seed})
        rows.append({**row(f"FGSM 3/255 on RGB (seed {seed})", eps=3 / 255, accuracy=large + 0.05), "seed": seed})
    exp = {"name": "s", "task": "classification", "metric": "accuracy", "clean": {"accuracy": 0.9}, "modalities": ["rgb"],
           "rows": rows, "transfer": None}
    checks = check_experiment(exp)
    monotone = [c for c in checks if c.name == "monotone-eps"]
    assert len(monotone) == 2 and all(c.ok for c in monotone), [c.message for c in monotone]
    assert {c.message.split(": ")[0].rsplit("(", 1)[1] for c in monotone} == {"seed 0)", "seed 1)"}
    iterative = [c for c in checks if c.name == "iterative-vs-single-step"]
    assert len(iterative) == 2 and all(c.ok for c in iterative)  # each PGD against its own seed's FGSM
    assert not any("monotone-eps" in r.get("checks", []) for r in annotate_rows(exp, checks))
