"""SYNTHETIC chest radiographs (frontal + lateral) with generated reports: the embedded default of the
image+text (vision-language) fusion experiments. Not real data, not medically accurate.

Latent design (see docs/vl-data.md). Labels alternate (``index % 2``: 0 normal, 1 abnormal), so the
classes are balanced. An abnormal case has one finding, drawn uniformly from :data:`FINDINGS`
(``opacity``, ``cardiomegaly``, ``effusion``, ``nodule``), and two independent coins:

- image evidence with probability ``p_image`` (0.8): the finding is drawn into the frontal view, the
  lateral view or both (0.6 both, 0.25 frontal only, 0.15 lateral only);
- text evidence with probability ``p_text`` (0.85): the report states the finding in its findings
  section, and restates it in the impression half of the time (otherwise the impression is a neutral
  one such as "See findings above.", which normal reports use too).

An abnormal case without image evidence is drawn exactly like a normal image; one without text
evidence gets a normal report. Normal cases carry distractors in both modalities: exposure, noise,
position, heart size and rib contrast vary, ECG electrodes (bright rings) and vessel markings appear on
any image; normal reports mention the diseases in negated form ("No pleural effusion.") and sides
("right", "left") in neutral sentences. So an ideal vision-only model reaches 0.5 + 0.5 * 0.8 = 0.90
accuracy, an ideal language-only model 0.925, and an ideal fused model 0.985 (an abnormal case is
invisible to both only with probability 0.2 * 0.15).

Every item is deterministic per ``(seed, split, index)``: the latents, each view and the report come
from separate random streams, so the frontal image does not change with ``views`` and the report does
not change with ``image_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch
from torch.utils.data import Dataset

from . import register_dataset
from .iu_xray import VL_CLASSES, VL_VIEWS, _indices, check_image_size, check_views, stack_items

__all__ = ["SyntheticXrayReports", "FINDINGS", "VL_SYNTHETIC_SPLITS", "MIN_WORDS", "MAX_WORDS", "draw_case", "render_view", "write_report"]

FINDINGS = ("opacity", "cardiomegaly", "effusion", "nodule")
VL_SYNTHETIC_SPLITS = ("train", "val", "test")
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}
MIN_WORDS, MAX_WORDS = 15, 35
#: where image evidence is drawn: (views, probability)
_VIEW_PATTERNS = ((("frontal", "lateral"), 0.6), (("frontal",), 0.25), (("lateral",), 0.15))
_STREAM = {"latent": 0, "frontal": 1, "lateral": 2, "text": 3}
_DESCRIPTION = (
    "SYNTHETIC chest radiographs (frontal + lateral) with generated reports, normal vs abnormal; not real "
    "data. Image evidence in 80% and text evidence in 85% of abnormal cases, independently"
)


def _rng(item_seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([item_seed, _STREAM[stream]])


# -- latents -------------------------------------------------------------------------------------


def draw_case(item_seed: int, label: int, p_image: float = 0.8, p_text: float = 0.85) -> dict:
    """The latent case of one item: finding, where it shows, and its geometry (shared by both views)."""
    g = _rng(item_seed, "latent")
    u = g.random(8)  # a fixed number of draws: the latents do not depend on one another's outcomes
    finding = FINDINGS[int(u[0] * len(FINDINGS))] if label == 1 else None
    image_evidence = label == 1 and u[1] < p_image
    text_evidence = label == 1 and u[2] < p_text
    cumulative, views = 0.0, ()
    for pattern, p in _VIEW_PATTERNS:
        cumulative += p
        if u[3] < cumulative:
            views = pattern
            break
    return {
        "label": label,
        "finding": finding,
        "image_evidence": bool(image_evidence),
        "text_evidence": bool(text_evidence),
        "evidence_views": views if image_evidence else (),
        "side": "right" if u[4] < 0.5 else "left",  # the patient's side: image left on a frontal film
        "height": float(u[5]),  # vertical position inside the lung, 0 top .. 1 bottom
        "severity": float(u[6]),
        "depth": float(u[7]),  # front-back position on the lateral view
    }


# -- images --------------------------------------------------------------------------------------


def _soft_ellipse(x, y, cx, cy, rx, ry, edge=0.08):
    """1 inside the ellipse, 0 outside, with a soft rim of relative width ``edge``."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 + edge - r) / (2 * edge), 0.0, 1.0)


def _blob(x, y, cx, cy, sigma):
    return np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)))


def _over(density, value, mask):
    return density + (value - density) * mask


def _ring(x, y, cx, cy, radius, width):
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return np.exp(-(((r - radius) / width) ** 2))


def _expose(g, density, size):
    """Density map -> film: random exposure (gamma, gain, offset) and quantum noise, in [0, 1]."""
    gamma, gain, offset = g.uniform(0.8, 1.25), g.uniform(0.85, 1.15), g.uniform(-0.05, 0.05)
    noise = g.normal(0.0, g.uniform(0.015, 0.04), (size, size))
    return np.clip(offset + gain * np.clip(density, 0, 1) ** gamma + noise, 0.0, 1.0).astype(np.float32)


def _distractors(g, x, y, density, lungs):
    # vessel markings near the hila, on every film
    for _ in range(int(g.integers(2, 6))):
        cx, cy = g.uniform(0.3, 0.7), g.uniform(0.35, 0.6)
        density = density + 0.05 * _blob(x, y, cx, cy, g.uniform(0.01, 0.02)) * lungs
    # ECG electrodes: metal rings anywhere on the chest
    if g.random() < 0.3:
        for _ in range(int(g.integers(1, 4))):
            cx, cy = g.uniform(0.15, 0.85), g.uniform(0.2, 0.9)
            density = np.maximum(density, 0.9 * _ring(x, y, cx, cy, g.uniform(0.02, 0.03), 0.008))
    return density


def render_view(item_seed: int, case: dict, view: str, size: int = 64) -> np.ndarray:
    """One radiograph (``view`` ``"frontal"`` or ``"lateral"``) of ``case``, (size, size) float32 in [0, 1]."""
    g = _rng(item_seed, view)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (x + 0.5) / size, (y + 0.5) / size
    s, cx = g.uniform(0.9, 1.05), 0.5 + g.normal(0.0, 0.02)
    show = view in case["evidence_views"]
    finding = case["finding"] if show else None
    severity, side, height, depth = case["severity"], case["side"], case["height"], case["depth"]
    density = np.full((size, size), g.uniform(0.02, 0.08), np.float32)
    if view == "frontal":
        density = _over(density, g.uniform(0.4, 0.5), _soft_ellipse(x, y, cx, 0.58, 0.46 * s, 0.58 * s, 0.05))
        # lungs: the patient's right lung is on the image's left
        centres = {"right": cx - 0.17 * s, "left": cx + 0.17 * s}
        rx, ry, ly = 0.13 * s, 0.27 * s, 0.47
        lung = {k: _soft_ellipse(x, y, c, ly, rx, ry) for k, c in centres.items()}
        lungs = np.maximum(lung["right"], lung["left"])
        density = _over(density, g.uniform(0.1, 0.17), lungs)
        # ribs: arcs across the lung fields, sloping down laterally
        contrast, spacing, phase = g.uniform(0.03, 0.09), g.uniform(0.055, 0.07), g.uniform(0, 0.05)
        v = y - 0.9 * (x - cx) ** 2 - phase
        ribs = np.exp(-((((v % spacing) / spacing) - 0.5) ** 2) / 0.02)
        density = density + contrast * ribs * lungs
        # spine / mediastinum and the heart shadow (below the centre, toward the patient's left)
        density = _over(density, g.uniform(0.5, 0.6), _soft_ellipse(x, y, cx, 0.45, 0.05 * s, 0.45, 0.2))
        ratio = g.uniform(0.58, 0.68) if finding == "cardiomegaly" else g.uniform(0.36, 0.48)
        heart_rx = ratio * 0.3 * s
        density = _over(density, g.uniform(0.55, 0.65), _soft_ellipse(x, y, cx + 0.03 * s, 0.64, heart_rx, 0.12 * s, 0.1))
        density = _distractors(g, x, y, density, lungs)
        if finding in ("opacity", "nodule", "effusion"):
            fx = centres[side] + (g.uniform(-0.5, 0.5) * rx)
            fy = ly - ry * 0.75 + height * ry * 1.3
            target = lung[side]
            if finding == "opacity":
                sigma = (0.05 + 0.04 * severity) * s
                texture = 0.7 + 0.3 * g.random((size, size))
                density = density + (0.35 + 0.15 * severity) * _blob(x, y, fx, fy, sigma) * texture * target
            elif finding == "nodule":
                radius = (0.032 + 0.016 * severity) * s
                density = density + 0.42 * _soft_ellipse(x, y, fx, fy, radius, radius, 0.3) * target
            else:  # effusion: fluid fills the lung base with a meniscus rising laterally
                level = ly + ry * (0.55 - 0.35 * severity) - 0.25 * np.abs(x - centres[side]) * (
                    np.sign(x - centres[side]) == (-1 if side == "right" else 1))
                fluid = np.clip((y - level) / 0.02, 0, 1) * target
                density = _over(density, g.uniform(0.5, 0.6), fluid)
    else:  # lateral: anterior (sternum) on the image's left, spine on the right
        density = _over(density, g.uniform(0.4, 0.5), _soft_ellipse(x, y, 0.5, 0.58, 0.38 * s, 0.56 * s, 0.05))
        lx, ly, rx, ry = 0.47, 0.47, 0.25 * s, 0.33 * s
        lungs = _soft_ellipse(x, y, lx, ly, rx, ry)
        density = _over(density, g.uniform(0.12, 0.2), lungs)
        # vertebrae: a column of bright blocks; the sternum: a thin band in front
        spine_x = lx + rx + 0.035 * s
        blocks = 0.5 + 0.5 * np.cos(2 * np.pi * y / g.uniform(0.06, 0.08))
        column = np.clip((0.045 * s - np.abs(x - spine_x)) / 0.01, 0, 1)
        density = _over(density, 0.55 + 0.15 * blocks, column)
        density = density + 0.12 * np.clip((0.012 - np.abs(x - (lx - rx - 0.02))) / 0.006, 0, 1) * (y > 0.2) * (y < 0.7)
        ratio = g.uniform(0.95, 1.15) if finding == "cardiomegaly" else g.uniform(0.55, 0.75)
        heart = _soft_ellipse(x, y, lx - 0.08 - 0.03 * ratio, 0.66, 0.15 * ratio * s, 0.13 * s, 0.12)
        density = _over(density, g.uniform(0.5, 0.6), heart)
        density = _distractors(g, x, y, density, lungs)
        fy = ly - ry * 0.7 + height * ry * 1.3
        fx = lx - rx * 0.5 + depth * rx
        if finding == "opacity":
            sigma = (0.05 + 0.04 * severity) * s
            texture = 0.7 + 0.3 * g.random((size, size))
            density = density + (0.35 + 0.15 * severity) * _blob(x, y, fx, fy, sigma) * texture * lungs
        elif finding == "nodule":
            radius = (0.032 + 0.016 * severity) * s
            density = density + 0.42 * _soft_ellipse(x, y, fx, fy, radius, radius, 0.3) * lungs
        elif finding == "effusion":  # the posterior costophrenic angle fills first
            level = ly + ry * (0.7 - 0.35 * severity) - 0.5 * np.clip(x - lx, 0, None)
            density = _over(density, g.uniform(0.5, 0.6), np.clip((y - level) / 0.02, 0, 1) * lungs)
    return _expose(g, density, size)


# -- reports -------------------------------------------------------------------------------------

_INDICATIONS = (
    "cough", "chest pain", "shortness of breath", "fever and cough", "routine physical exam", "preoperative evaluation",
    "dyspnea", "follow up", "weakness and fatigue", "hypertension", "back pain", "fall", "smoker", "wheezing",
)
#: normal sentences per topic; ``{side}`` is filled with right / left
_NORMAL = {
    "heart": ("The heart is normal in size.", "Heart size is normal.", "The heart size is within normal limits.",
              "Normal heart size.", "The cardiac silhouette is normal."),
    "mediastinum": ("The mediastinum is normal.", "Mediastinal contours are normal.", "Normal mediastinal contour."),
    "lungs": ("The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are clear without focal consolidation.",
              "No focal consolidation.", "No focal airspace opacity.", "No consolidation in the right or left lung."),
    "effusion": ("No pleural effusion.", "No pleural effusion or pneumothorax.", "There is no effusion.",
                 "No {side} pleural effusion."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."),
    "nodule": ("No suspicious nodule.", "No pulmonary nodule is seen.", "No discrete nodule or mass."),
    "bones": ("The bones are intact.", "Mild degenerative changes of the spine.", "No acute bony abnormality.",
              "Degenerative changes of the {side} shoulder.", "Osseous structures are normal."),
}
_TOPICS = tuple(_NORMAL)
#: the topic each finding's evidence sentence replaces
_FINDING_TOPIC = {"opacity": "lungs", "cardiomegaly": "heart", "effusion": "effusion", "nodule": "nodule"}
_EVIDENCE = {
    "opacity": ("There is a focal opacity in the {side} lower lobe.", "Patchy airspace opacity in the {side} base.",
                "{Side} lower lobe consolidation is present.", "There is an area of consolidation in the {side} lung."),
    "cardiomegaly": ("The heart is enlarged.", "Heart size is enlarged.", "The cardiac silhouette is enlarged.",
                     "There is moderate cardiomegaly."),
    "effusion": ("There is a small {side} pleural effusion.", "Small {side} effusion with blunting of the costophrenic angle.",
                 "{Side} pleural effusion is present."),
    "nodule": ("There is a small nodule in the {side} upper lobe.", "A round nodule is seen in the {side} lung.",
               "New {side} lung nodule."),
}
_EVIDENCE_IMPRESSION = {
    "opacity": ("{Side} lower lobe pneumonia.", "Focal consolidation, likely pneumonia.", "Airspace disease in the {side} lung."),
    "cardiomegaly": ("Cardiomegaly.", "Enlarged heart.", "Mild cardiomegaly."),
    "effusion": ("Small {side} pleural effusion.", "Pleural effusion."),
    "nodule": ("Pulmonary nodule, recommend follow up.", "{Side} lung nodule."),
}
#: impressions that do not restate the findings: any report may end with one
_NEUTRAL_IMPRESSION = ("Findings as described above.", "See findings above.", "Clinical correlation is recommended.")
#: impressions of a report without evidence
_NORMAL_IMPRESSION = ("No acute cardiopulmonary disease.", "No active disease.", "Normal chest.", "No acute abnormality.",
                      "Clear lungs and normal heart.", "Stable normal chest.", *_NEUTRAL_IMPRESSION)


def _n_words(text: str) -> int:
    return len(text.split())


def write_report(item_seed: int, case: dict) -> str:
    """The report of ``case``: ``Indication: ... Findings: ... Impression: ...``, 15-35 words."""
    g = _rng(item_seed, "text")

    def pick(options, side=None):
        side = side or ("right" if g.random() < 0.5 else "left")
        return options[int(g.integers(len(options)))].format(side=side, Side=side.capitalize())

    finding = case["finding"] if case["text_evidence"] else None
    indication = f"Indication: {pick(_INDICATIONS).capitalize()}."
    if not finding:
        impression = pick(_NORMAL_IMPRESSION)
    elif g.random() < 0.5:
        impression = pick(_EVIDENCE_IMPRESSION[finding], case["side"])
    else:
        impression = pick(_NEUTRAL_IMPRESSION)
    head, tail = _n_words(indication) + 1, _n_words(impression) + 1  # + "Findings:", "Impression:"
    target = int(g.integers(MIN_WORDS + 3, MAX_WORDS - 2))
    forced = _FINDING_TOPIC[finding] if finding else None
    order = [t for t in g.permutation(_TOPICS) if t != forced]
    chosen = {forced: pick(_EVIDENCE[finding], case["side"])} if finding else {}
    words = head + tail + sum(_n_words(s) for s in chosen.values())
    for topic in order:
        sentence = pick(_NORMAL[topic])
        if words + _n_words(sentence) > MAX_WORDS or (words >= target and len(chosen) >= 2):
            continue
        chosen[topic] = sentence
        words += _n_words(sentence)
    findings = " ".join(chosen[t] for t in _TOPICS if t in chosen)
    return f"{indication} Findings: {findings} Impression: {impression}"


# -- dataset -------------------------------------------------------------------------------------


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


@register_dataset("synthetic-xray-reports")
class SyntheticXrayReports(Dataset):
    """SYNTHETIC chest radiographs (frontal + lateral views) with generated reports; normal vs abnormal.

    Not real data (see the module docstring and docs/vl-data.md for the design). ``split`` picks
    disjoint seeds; ``size`` items per split; ``image_size`` the side of the square images (default
    64); ``views`` ``("frontal", "lateral")`` or ``("frontal",)``; ``p_image`` / ``p_text``: the
    probabilities that an abnormal case shows its finding in the images / states it in the report.
    Items: ``{"frontal", ["lateral",] "text", "label", "uid"}``; :meth:`evidence` gives the latents.
    """

    synthetic = True
    classes = VL_CLASSES
    description = _DESCRIPTION

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        image_size: int = 64,
        views: Sequence[str] = VL_VIEWS,
        seed: int = 0,
        p_image: float = 0.8,
        p_text: float = 0.85,
    ) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split must be one of {list(_SPLIT_OFFSET)}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= _SPLIT_OFFSET["val"]:
            raise ValueError(f"size must be an int in [1, {_SPLIT_OFFSET['val']}] (splits would overlap beyond), got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.image_size, self.views = check_image_size(image_size), check_views(views)
        self.p_image, self.p_text = _probability("p_image", p_image), _probability("p_text", p_text)

    def __len__(self) -> int:
        return self.size

    def _seed(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, Integral):
            raise TypeError(f"index must be an int, got {index!r}")
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        return self.seed * 10_000_000 + _SPLIT_OFFSET[self.split] + int(index)

    def _label(self, index: int) -> int:
        return int(index % self.size) % 2

    def evidence(self, index: int) -> dict:
        """The latents of item ``index`` (cheap, nothing rendered): ``label``, ``finding`` (None for
        normal), ``image_evidence``, ``text_evidence``, ``evidence_views`` and the finding's geometry."""
        return draw_case(self._seed(index), self._label(index), self.p_image, self.p_text)

    def __getitem__(self, index: int) -> dict:
        item_seed = self._seed(index)
        case = draw_case(item_seed, self._label(index), self.p_image, self.p_text)
        item: dict = {v: torch.from_numpy(render_view(item_seed, case, v, self.image_size)).unsqueeze(0) for v in self.views}
        uid = f"synthetic-{self.split}-{self.seed}-{int(index) % self.size}"
        item.update(text=write_report(item_seed, case), label=case["label"], uid=uid)
        return item

    def tensors(self, indices=None) -> tuple[dict, torch.Tensor]:
        """The items at ``indices`` (default: all) as ``({"frontal", ["lateral",] "text"}, labels)``."""
        return stack_items([self[i] for i in _indices(len(self), indices)], self.views)
