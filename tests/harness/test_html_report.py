"""The combined report: Markdown, self-contained HTML, CSV and JSON from a stored summary."""

import csv
import json
import math
import re
import time

import pytest

from mmfusion_attacks.harness.html_report import word_diff, write_reports, write_table_text


def _png(path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=20)
    fig.add_subplot().imshow([[0, 1], [1, 0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _seg_row(eps_255, attacked, miou, checks=()):
    return {
        "cell": f"FGSM {eps_255}/255 on {'+'.join(a.upper() for a in attacked)}", "kind": "attack",
        "attack": "fgsm", "toolkit": "torchattacks", "eps": eps_255 / 255, "steps": 1, "attacked": list(attacked),
        "group": None, "applies": True, "accuracy": 0.5 + miou / 2, "mIoU": miou, "mAcc": miou + 0.1,
        "IoU_R": float("nan"), "flags": [], "checks": list(checks),
    }


def _summary(tmp_path):
    _png(tmp_path / "qualitative" / "rgbt_0_fgsm.png")
    bad = "FGSM 8/255 on RGB+IR"
    seg = {
        "name": "rgbt-synthetic", "task": "segmentation", "title": "RGB-T segmentation: MFNet on SYNTHETIC scenes",
        "description": {"model": "MFNet (random init)", "data": "SYNTHETIC rule-labelled scenes", "labels": "ground truth"},
        "metric": "mIoU", "clean": {"accuracy": 0.91, "mIoU": 0.55, "mAcc": 0.6},
        "rows": [
            _seg_row(4, ["rgb"], 0.5), _seg_row(8, ["rgb"], 0.4), _seg_row(4, ["rgb", "ir"], 0.3),
            _seg_row(8, ["rgb", "ir"], 0.35, checks=["monotone-eps"]),
            {"cell": "worst case 8/255", "kind": "worst-case", "attacked": ["rgb", "ir"], "group": "worst case",
             "mIoU": 0.2, "accuracy": 0.4, "flags": ["optimiser-weaker"], "checks": []},
        ],
        "checks": [
            {"name": "monotone-eps", "ok": False, "cells": [bad], "message": "score rose with eps", "remedy": "more steps"},
            {"name": "clean-first", "ok": True, "cells": [], "message": "", "remedy": ""},
        ],
        "qualitative": [
            {"kind": "segmentation", "cell": bad, "caption": "scene 0", "path": "qualitative/rgbt_0_fgsm.png"},
            {"kind": "segmentation", "cell": bad, "caption": "gone", "path": "qualitative/nope.png"},
        ],
        "transfer": {"metric": "IoU_R", "sources": ["A", "B"], "targets": ["A", "B"],
                     "values": {"A -> A": 0.1, "A -> B": 0.7, "B -> A": float("nan")}},
        "seconds": 12.3, "shards": {"done": 4, "total": 4},
    }
    cls = {
        "name": "vl-text", "task": "classification", "title": "Médical VQA — ünïcode ✓",
        "description": {"model": "tiny CLIP", "data": "real-ish"}, "metric": "accuracy",
        "clean": {"accuracy": 0.8},
        "rows": [{"cell": "typo on text", "kind": "attack", "attack": "typo", "toolkit": None, "eps": None,
                  "steps": None, "attacked": ["text"], "accuracy": 0.6, "success_rate": 0.25,
                  "queries_per_example": 12.0, "flags": [], "checks": []}],
        "checks": [],
        "qualitative": [{"kind": "text", "cell": "typo on text", "original": "the heart <b>is</b> normal",
                         "adversarial": "the hart <script>alert(1)</script> is normäl"}],
        "transfer": None,
    }
    empty = {"name": "empty", "task": "classification", "rows": []}
    return {"name": "default", "package_version": "0.1.0", "created": "2026-12-06T16:00:00Z", "spec_path": None,
            "experiments": [seg, cls, empty]}


@pytest.fixture
def written(tmp_path):
    t0 = time.perf_counter()
    paths = write_reports(_summary(tmp_path), tmp_path)
    return tmp_path, paths, time.perf_counter() - t0


def test_files_exist(written):
    out, paths, seconds = written
    for key, name in (("md", "report.md"), ("html", "report.html"), ("csv", "results.csv"), ("json", "results.json")):
        assert paths[key] == out / name and paths[key].stat().st_size > 0
    figs = sorted((out / "figures").glob("*.png"))
    assert len(figs) == 1 and paths["figures"] == out / "figures"  # one (attack, toolkit, steps) group with eps
    assert seconds < 10


def test_html_self_contained_and_escaped(written):
    out, paths, _ = written
    page = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 2  # one curve, one qualitative PNG
    assert "missing: qualitative/nope.png" in page
    assert "1 validity warnings" in page and "⚠ monotone-eps" in page and 'class="warn"' in page
    assert "more steps" in page and "score rose with eps" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>is</b>" not in page
    assert "<mark>hart</mark>" in page and "<del>heart</del>" in page and "<mark>normäl</mark>" in page
    assert "Médical VQA — ünïcode ✓" in page and "SYNTHETIC DATA" in page
    assert 'href="#rgbt-synthetic"' in page and 'id="rgbt-synthetic"' in page
    assert "—" in page  # NaN IoU_R


def test_markdown(written):
    out, paths, _ = written
    md = paths["md"].read_text(encoding="utf-8")
    assert "| cell | attacked | mIoU | accuracy | mAcc | IoU\\_R | flags | warnings |" in md
    assert "⚠ monotone-eps" in md and "1 validity warnings" in md and "remedy: more steps" in md
    assert "SYNTHETIC DATA" in md and "](figures/" in md and "](qualitative/rgbt_0_fgsm.png)" in md
    assert "missing: qualitative/nope.png" in md and "](figures/rgbt-synthetic_fgsm_torchattacks_1.png)" in md
    assert "~~heart~~" in md and "**hart**" in md and "<script>" not in md
    assert "| A | 0.100 | 0.700 |" in md and "| B | — | — |" in md


def test_csv_one_line_per_row(written):
    out, paths, _ = written
    with paths["csv"].open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert [r["experiment"] for r in rows] == ["rgbt-synthetic"] * 5 + ["vl-text"]
    assert rows[2]["attacked"] == "rgb+ir" and rows[3]["checks"] == "monotone-eps" and rows[0]["IoU_R"] == ""
    assert rows[3]["headline_metric"] == "mIoU" and float(rows[3]["headline_value"]) == 0.35
    assert rows[5]["success_rate"] == "0.25"


def test_json_round_trip(written, tmp_path):
    out, paths, _ = written
    text = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in text
    data = json.loads(text)
    seg = data["experiments"][0]
    assert seg["rows"][0]["IoU_R"] is None and seg["transfer"]["values"]["B -> A"] is None
    assert seg["rows"][0]["mIoU"] == 0.5 and data["experiments"][1]["title"] == "Médical VQA — ünïcode ✓"
    assert data["experiments"][2]["rows"] == []


def test_table_text_and_edge_cases(tmp_path):
    summary = _summary(tmp_path)
    text = write_table_text(summary["experiments"][0])
    lines = text.splitlines()
    assert "[SYNTHETIC DATA]" in lines[0] and "⚠ 1 validity warnings: monotone-eps" in text
    assert any("FGSM 8/255 on RGB+IR" in ln and "⚠ monotone-eps" in ln for ln in lines)
    assert "(no rows)" in write_table_text(summary["experiments"][2])
    assert "(no rows)" in write_table_text({})
    paths = write_reports({"experiments": [{}, {"rows": [{"mIoU": math.nan}]}]}, tmp_path / "bare")
    assert "figures" not in paths and paths["html"].exists()
    assert write_reports({}, tmp_path / "none")["json"].read_text().strip() == "{}"


def test_word_diff():
    ops = word_diff("a b c", "a x c d")
    assert ops == [("equal", ["a"], ["a"]), ("replace", ["b"], ["x"]), ("equal", ["c"], ["c"]), ("insert", [], ["d"])]


def test_curves_draw_one_line_per_subset_and_seed(tmp_path, monkeypatch):
    import matplotlib.axes

    from mmfusion_attacks.harness.html_report import robustness_figures

    rows = [{**_seg_row(e, ["rgb"], m), "seed": seed} for seed, ms in ((0, (0.5, 0.4)), (1, (0.3, 0.2))) for e, m in zip((4, 8), ms)]
    lines = []
    orig = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, *a, **k: (lines.append((k.get("label"), list(y))),
                                                                                  orig(self, x, y, *a, **k))[1])
    figs = robustness_figures({"name": "e", "metric": "mIoU", "clean": {"mIoU": 0.6}, "rows": rows}, tmp_path)
    assert len(figs) == 1
    assert sorted(lines) == [("rgb (seed 0)", [0.5, 0.4]), ("rgb (seed 1)", [0.3, 0.2])]


def test_curves_in_the_modalities_own_units_are_not_read_as_x_over_255(tmp_path, monkeypatch):
    """`eps: [0.5, 1.0]` (own units, a thermal camera in [0, 2]) is plotted as given, not times 255."""
    import matplotlib.axes

    from mmfusion_attacks.harness.html_report import robustness_figures

    xs, labels = [], []
    orig_plot, orig_label = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set_xlabel
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, *a, **k: (xs.append(list(x)), orig_plot(self, x, y, *a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda self, t, *a, **k: (labels.append(t), orig_label(self, t, *a, **k))[1])
    own = [{**_seg_row(e, ["ir"], m), "eps": e, "eps_unit": "own units"} for e, m in ((0.5, 0.4), (1.0, 0.3))]
    robustness_figures({"name": "e", "metric": "mIoU", "clean": {"mIoU": 0.6}, "rows": own}, tmp_path)
    assert xs == [[0.5, 1.0]] and labels == ["eps (own units)"]
    xs.clear()
    labels.clear()
    per255 = [{**_seg_row(e, ["ir"], m), "eps_unit": "x/255"} for e, m in ((4, 0.4), (8, 0.3))]
    robustness_figures({"name": "f", "metric": "mIoU", "clean": {"mIoU": 0.6}, "rows": per255}, tmp_path)
    assert labels == ["eps (x/255)"] and [round(v, 6) for v in xs[0]] == [4.0, 8.0]
