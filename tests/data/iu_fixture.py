"""Writes a small IU X-ray fixture in the exact release format (Kaggle "chest-xrays-indiana-university").

    root/indiana_reports.csv      uid,MeSH,Problems,image,indication,comparison,findings,impression
    root/indiana_projections.csv  uid,filename,projection
    root/images/images_normalized/<uid>_IM-<uid:04d>-<n>.dcm.png   (8-bit grayscale PNG)

Good rows mimic the release: de-identification placeholders (``XXXX``), empty findings or indication
cells, a multi-line quoted cell, ``Problems`` spelled ``normal`` / `` Normal `` / a list of problems, and
some uids with a second frontal image whose file name sorts after the first. ``bad`` adds rows that the
loader must skip (one reason each; ``shared_image`` adds two uids naming one frontal image) and
projection rows it must ignore; the returned :class:`IUFixture`
says what a correct loader reports.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPORT_COLUMNS = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
PROJECTION_COLUMNS = ["uid", "filename", "projection"]
#: kinds of report rows the loader skips, in the order it checks them
SKIP_KINDS = (
    "duplicate_uid", "missing_label", "empty_text", "missing_projection", "shared_image", "missing_image", "unreadable_image",
)
#: kinds of projection rows the loader ignores
IGNORE_KINDS = ("unknown_uid", "unknown_projection")

_INDICATIONS = ["Positive TB test", "XXXX-year-old male with chest pain.", "", "Preop bariatric surgery.", "Dyspnea"]
_FINDINGS = [
    "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema.",
    "",
    "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries.",
    "The lungs are clear.\nNo pneumothorax or pleural effusion.   Heart size normal.",
    "Left lower lobe airspace disease XXXX atelectasis.",
]
_IMPRESSIONS = ["Normal chest x-XXXX.", "No active disease.", "1. Cardiomegaly.  2. No acute infiltrate.", "Negative for acute abnormality."]
_ABNORMAL_PROBLEMS = ["Cardiomegaly;Pulmonary Artery", "Opacity;Lung;Atelectasis", "Calcified Granuloma", "Markings;Lung"]


@dataclass
class IUFixture:
    root: Path
    images_dir: Path
    #: uids a correct loader keeps with both views, in CSV order
    uids: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    #: uid -> view -> file name the loader must choose (first by file name)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    #: skip kind -> uids, one entry per report row (a duplicated uid appears once per row)
    bad: dict[str, list[str]] = field(default_factory=dict)
    #: ignore kind -> number of projection rows
    ignored: dict[str, int] = field(default_factory=dict)
    #: uids skipped only for a missing lateral view: kept in frontal-only mode (``texts``, ``labels`` and
    #: ``files`` cover them too)
    frontal_only_uids: list[str] = field(default_factory=list)


def _expected_text(row: dict) -> str:
    parts = [row[k] for k in ("indication", "findings", "impression") if row[k].strip() and row[k].strip().lower() != "nan"]
    return re.sub(r"\s+", " ", " ".join(parts)).strip()


def _png(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    width, height = size
    ramp = np.linspace(0, 200, width)[None, :] + rng.integers(0, 55, (height, width))
    Image.fromarray(ramp.astype(np.uint8), mode="L").save(path)


def write_iu_fixture(
    root: str | Path,
    n: int = 8,
    seed: int = 0,
    bad: Mapping[str, int] | Iterable[str] = (),
    image_size: tuple[int, int] = (40, 32),
    images_subdir: str = "images/images_normalized",
) -> IUFixture:
    """Write ``n`` good examples (plus the ``bad`` rows: kind -> count, or kinds once each) under ``root``.

    ``image_size`` is (width, height) of the PNGs. Returns what a correct loader reports."""
    root = Path(root)
    images = root / images_subdir
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = dict(bad) if isinstance(bad, Mapping) else {kind: 1 for kind in bad}
    unknown = set(counts) - set(SKIP_KINDS) - set(IGNORE_KINDS)
    if unknown:
        raise ValueError(f"unknown bad kinds {sorted(unknown)}; known: {SKIP_KINDS + IGNORE_KINDS}")
    kinds = [kind for kind in SKIP_KINDS for _ in range(counts.get(kind, 0))]
    order = ["good"] * n + kinds
    rng.shuffle(order)

    fixture = IUFixture(root=root, images_dir=images, bad={}, ignored={})
    reports, projections = [], []
    unreadable = 0
    for number, kind in enumerate(order, start=1):
        uid = str(number)
        abnormal = bool(rng.integers(2))
        problems = str(rng.choice(_ABNORMAL_PROBLEMS) if abnormal else rng.choice(["normal", " Normal "]))
        row = {
            "uid": uid,
            "MeSH": problems.replace(";", "/").strip() if abnormal else "normal",
            "Problems": problems,
            "image": "Xray Chest PA and Lateral",
            "indication": str(rng.choice(_INDICATIONS)),
            "comparison": str(rng.choice(["None.", "", "XXXX, XXXX"])),
            "findings": str(rng.choice(_FINDINGS)),
            "impression": str(rng.choice(_IMPRESSIONS)),
        }
        if kind == "missing_label":
            row["Problems"] = ""
        if kind == "empty_text":
            row.update(indication="", findings="  ", impression="nan")
        frontal, lateral = f"{uid}_IM-{number:04d}-1001.dcm.png", f"{uid}_IM-{number:04d}-2001.dcm.png"
        rows = [{"uid": uid, "filename": frontal, "projection": "Frontal"}]
        if kind != "missing_projection":
            rows.append({"uid": uid, "filename": lateral, "projection": "Lateral"})
        if kind == "good" and number % 3 == 0:  # a second frontal image, listed first but sorting last
            extra = f"{uid}_IM-{number:04d}-3001.dcm.png"
            rows.insert(0, {"uid": uid, "filename": extra, "projection": "Frontal"})
        for r in rows:
            if kind == "missing_image" and r["projection"] == "Frontal":
                continue
            if kind == "unreadable_image" and r["projection"] == "Frontal":
                # alternately an empty file and bytes that are not an image
                (images / r["filename"]).write_bytes(b"" if unreadable % 2 == 0 else b"not a png at all")
                unreadable += 1
                continue
            _png(images / r["filename"], rng, image_size)
        projections.extend(rows)
        reports.append(row)
        if kind == "duplicate_uid":
            reports.append(dict(row, findings="A second report for the same uid."))
            fixture.bad.setdefault(kind, []).extend([uid, uid])
        elif kind == "shared_image":
            # another patient (opposite label) whose frontal row names this uid's frontal image
            other = str(80_000 + number)
            reports.append(dict(row, uid=other, Problems="normal" if abnormal else "Cardiomegaly"))
            projections.append({"uid": other, "filename": frontal, "projection": "Frontal"})
            projections.append({"uid": other, "filename": f"{other}_IM-{number:04d}-2001.dcm.png", "projection": "Lateral"})
            _png(images / f"{other}_IM-{number:04d}-2001.dcm.png", rng, image_size)
            fixture.bad.setdefault(kind, []).extend([uid, other])
        elif kind == "good":
            fixture.uids.append(uid)
        else:
            fixture.bad.setdefault(kind, []).append(uid)
        if kind in ("good", "missing_projection"):
            fixture.texts[uid] = _expected_text(row)
            fixture.labels[uid] = 0 if row["Problems"].strip().lower() == "normal" else 1
            fixture.files[uid] = {"frontal": frontal, "lateral": lateral}
        if kind == "missing_projection":
            fixture.frontal_only_uids.append(uid)

    if counts.get("unknown_uid"):
        for i in range(counts["unknown_uid"]):
            projections.append({"uid": str(90_000 + i), "filename": f"{90_000 + i}_IM-9999-1001.dcm.png", "projection": "Frontal"})
        fixture.ignored["unknown_uid"] = counts["unknown_uid"]
    if counts.get("unknown_projection"):
        for i in range(counts["unknown_projection"]):  # an extra row for a good uid: the uid stays usable
            uid = fixture.uids[i % len(fixture.uids)]
            projections.append({"uid": uid, "filename": f"{uid}_IM-9999-{4001 + i}.dcm.png", "projection": "Oblique"})
        fixture.ignored["unknown_projection"] = counts["unknown_projection"]

    with open(root / "indiana_reports.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(reports)
    with open(root / "indiana_projections.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PROJECTION_COLUMNS)
        writer.writeheader()
        writer.writerows(projections)
    return fixture
