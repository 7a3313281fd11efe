"""The SYNTHETIC chest X-ray + report default: format, determinism, splits and the latent design."""

import time

import numpy as np
import pytest
import torch

from mmfusion_attacks.data import SyntheticXrayReports, create_dataset
from mmfusion_attacks.data.synthetic_vl import (
    _EVIDENCE,
    _EVIDENCE_IMPRESSION,
    FINDINGS,
    MAX_WORDS,
    MIN_WORDS,
    render_view,
    write_report,
)


def evidence_sentences(finding):
    return {t.format(side=s, Side=s.capitalize()) for t in _EVIDENCE[finding] for s in ("right", "left")}


def test_registered_and_labelled_synthetic():
    ds = create_dataset("synthetic-xray-reports", split="test", size=4)
    assert isinstance(ds, SyntheticXrayReports) and ds.synthetic and "SYNTHETIC" in ds.description
    assert "SYNTHETIC" in SyntheticXrayReports.__doc__ and ds.classes == ("normal", "abnormal")
    assert ds.views == ("frontal", "lateral") and ds.image_size == 64 and len(ds) == 4


def test_item_format():
    ds = SyntheticXrayReports(size=6, image_size=48)
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"frontal", "lateral", "text", "label", "uid"}
        for view in ("frontal", "lateral"):
            assert item[view].shape == (1, 48, 48) and item[view].dtype == torch.float32
            assert 0 <= float(item[view].min()) and float(item[view].max()) <= 1 and float(item[view].std()) > 0.05
        assert isinstance(item["text"], str) and item["label"] == i % 2 and isinstance(item["label"], int)
    assert len({ds[i]["uid"] for i in range(6)}) == 6
    with pytest.raises(IndexError):
        ds[6]


def test_tensors():
    ds = SyntheticXrayReports(size=5)
    batch, labels = ds.tensors()
    assert set(batch) == {"frontal", "lateral", "text"}
    assert batch["frontal"].shape == batch["lateral"].shape == (5, 1, 64, 64) and batch["frontal"].dtype == torch.float32
    assert batch["text"] == [ds[i]["text"] for i in range(5)] and all(isinstance(t, str) for t in batch["text"])
    assert labels.dtype == torch.long and labels.tolist() == [0, 1, 0, 1, 0]
    sub, sub_labels = ds.tensors([3, 1])
    assert torch.equal(sub["frontal"][0], ds[3]["frontal"]) and sub_labels.tolist() == [1, 1]
    frontal_only, _ = SyntheticXrayReports(size=2, views=("frontal",)).tensors()
    assert set(frontal_only) == {"frontal", "text"}


def test_deterministic_per_seed_split_and_index():
    a, b = SyntheticXrayReports(size=4, seed=3), SyntheticXrayReports(size=4, seed=3)
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x["frontal"], y["frontal"]) and torch.equal(x["lateral"], y["lateral"]) and x["text"] == y["text"]
    # the views and the report come from separate streams
    assert torch.equal(SyntheticXrayReports(size=4, seed=3, views=("frontal",))[2]["frontal"], a[2]["frontal"])
    assert SyntheticXrayReports(size=4, seed=3, image_size=32)[2]["text"] == a[2]["text"]
    assert not torch.equal(SyntheticXrayReports(size=4, seed=4)[2]["frontal"], a[2]["frontal"])


def test_splits_are_disjoint():
    items = {s: SyntheticXrayReports(split=s, size=3) for s in ("train", "val", "test")}
    uids = [ds[i]["uid"] for ds in items.values() for i in range(3)]
    assert len(set(uids)) == 9
    assert not torch.equal(items["train"][0]["frontal"], items["val"][0]["frontal"])
    assert len({items[s]._seed(i) for s in items for i in range(3)}) == 9
    with pytest.raises(ValueError, match="split"):
        SyntheticXrayReports(split="all")
    for bad in (0, -1, 1.5, True, 10**7):
        with pytest.raises(ValueError, match="size"):
            SyntheticXrayReports(size=bad)
    with pytest.raises(ValueError, match="p_text"):
        SyntheticXrayReports(p_text=1.5)
    with pytest.raises(ValueError, match="views"):
        SyntheticXrayReports(views=("lateral",))


def test_balance_and_evidence_frequencies():
    ds = SyntheticXrayReports(size=8000, seed=1)
    cases = [ds.evidence(i) for i in range(len(ds))]
    labels = np.array([c["label"] for c in cases])
    assert labels.sum() == 4000
    normal = [c for c in cases if c["label"] == 0]
    assert not any(c["image_evidence"] or c["text_evidence"] or c["finding"] or c["evidence_views"] for c in normal)
    abnormal = [c for c in cases if c["label"] == 1]
    image = np.array([c["image_evidence"] for c in abnormal])
    text = np.array([c["text_evidence"] for c in abnormal])
    assert abs(image.mean() - 0.8) < 0.025 and abs(text.mean() - 0.85) < 0.025
    assert abs((~image & ~text).mean() - 0.2 * 0.15) < 0.012  # independent coins
    findings = np.array([FINDINGS.index(c["finding"]) for c in abnormal])
    assert np.all(np.abs(np.bincount(findings, minlength=4) / len(abnormal) - 0.25) < 0.03)
    patterns = [c["evidence_views"] for c in abnormal if c["image_evidence"]]
    share = {p: patterns.count(p) / len(patterns) for p in set(patterns)}
    assert abs(share[("frontal", "lateral")] - 0.6) < 0.03 and abs(share[("frontal",)] - 0.25) < 0.03
    assert abs(share[("lateral",)] - 0.15) < 0.03
    assert all(c["evidence_views"] == () for c in abnormal if not c["image_evidence"])
    never = SyntheticXrayReports(size=200, p_image=0.0, p_text=1.0)
    assert all(not never.evidence(i)["image_evidence"] and never.evidence(i)["text_evidence"] == (i % 2 == 1) for i in range(200))


def test_reports():
    ds = SyntheticXrayReports(size=3000, seed=2)
    counts, with_evidence = [], 0
    for i in range(len(ds)):
        case = ds.evidence(i)
        report = write_report(ds._seed(i), case)
        counts.append(len(report.split()))
        assert report.startswith("Indication: ") and " Findings: " in report and " Impression: " in report
        stated = {f for f in FINDINGS if any(s in report for s in evidence_sentences(f))}
        if case["text_evidence"]:
            assert stated == {case["finding"]}, report
            assert case["side"] in report.lower() or case["finding"] == "cardiomegaly"
            with_evidence += 1
        else:
            assert not stated, report
            restated = {t.format(side=s, Side=s.capitalize()) for f in FINDINGS for t in _EVIDENCE_IMPRESSION[f] for s in ("right", "left")}
            assert not any(r in report for r in restated), report
    assert MIN_WORDS <= min(counts) and max(counts) <= MAX_WORDS and 20 < np.mean(counts) < 30
    assert abs(with_evidence / 1500 - 0.85) < 0.04
    # normal reports mention the diseases in negated form
    normals = " ".join(ds[i]["text"] for i in range(0, 100, 2)).lower()
    assert "no pleural effusion" in normals and ("no focal consolidation" in normals or "no consolidation" in normals)


def test_image_evidence_is_drawn_where_the_case_says():
    ds = SyntheticXrayReports(size=400, seed=5)
    seen = set()
    for i in range(1, 400, 2):
        case = ds.evidence(i)
        for view in ("frontal", "lateral"):
            clean = render_view(ds._seed(i), dict(case, evidence_views=()), view)
            drawn = render_view(ds._seed(i), case, view)
            assert np.array_equal(clean, drawn) == (view not in case["evidence_views"])
            if view in case["evidence_views"]:
                assert np.abs(drawn - clean).max() > 0.1, (i, case["finding"], view)
                seen.add((case["finding"], view))
    assert len(seen) == 8  # every finding in both views


def test_text_alone_is_informative_but_not_complete():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    def texts(split, n):
        ds = SyntheticXrayReports(split=split, size=n)
        return [write_report(ds._seed(i), ds.evidence(i)) for i in range(n)], np.arange(n) % 2

    (x_train, y_train), (x_test, y_test) = texts("train", 1500), texts("test", 1000)
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True)
    model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform(x_train), y_train)
    accuracy = (model.predict(vectorizer.transform(x_test)) == y_test).mean()
    assert 0.88 < accuracy < 0.96  # the design's ceiling is 0.925


def test_cheap_to_generate():
    ds = SyntheticXrayReports(size=100)
    ds[0]
    start = time.perf_counter()
    for i in range(100):
        ds[i]
    assert (time.perf_counter() - start) / 100 < 0.03  # a few ms on one core; generous for a shared machine
