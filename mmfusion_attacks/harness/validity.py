"""Validity checks on benchmark results, after Carlini et al. (2019), "On Evaluating Adversarial
Robustness" (arXiv:1902.06705): results that break a property every correct evaluation has are flagged,
so a report shows a warning next to the number instead of printing it as a robustness claim.

Pure functions over an experiment summary (a dict: ``name``, ``task``, ``metric``, ``clean``,
``modalities``, optional ``ignored``, ``rows``, ``transfer``; rows as written by the grid engine). The
checks, each with a stable name:

``monotone-eps``
    a larger budget never helps the model (paper §5.2, "Verify increasing the perturbation budget
    strictly increases attack success rate").
``iterative-vs-single-step``
    an iterative attack is at least as strong as its single-step counterpart at the same budget (§5.2).
``whitebox-vs-transfer``
    in a transfer matrix, the white-box cell (crafted on the target itself) is at least as strong as
    every transfer into that target (§5.4).
``superset-vs-subset``
    attacking a superset of modalities is at least as strong as attacking any subset of it (the
    attacker may leave the extra modalities alone).
``unbounded-sanity``
    an attack with an unbounded budget drives accuracy to (nearly) zero (§5.3, "Perform an unbounded
    attack").
``ignored-modality``
    attacking a modality the model does not read (or ignores by construction) changes nothing.

Lower metric = stronger attack throughout (the headline ``metric`` is a robust score). A check instance
is returned only where it can be evaluated; NaN / missing scores are skipped.

Sanity threshold: an unbounded attack should reach 100% success, i.e. 0% accuracy (§5.3). A finite-step
optimiser may leave a few stragglers, so a sanity row passes when
``accuracy <= max(sanity_floor, sanity_threshold * clean_accuracy)`` (defaults 0.05 and 0.1): a 0.1
fraction of clean accuracy is roughly an attack success rate >= 90% among the examples the model gets
right, and the 0.05 floor keeps tiny / low-accuracy sets from demanding an exact zero. For segmentation
the same bound applies to pixel accuracy (the ``accuracy`` field). Only sanity rows that attack every
modality the model uses are checked: with a modality left clean, the model may legitimately still be
right from that modality alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

__all__ = [
    "CHECK_NAMES",
    "Check",
    "annotate_rows",
    "check_experiment",
    "failed",
    "format_checks",
]

CHECK_NAMES: tuple[str, ...] = (
    "monotone-eps",
    "iterative-vs-single-step",
    "whitebox-vs-transfer",
    "superset-vs-subset",
    "unbounded-sanity",
    "ignored-modality",
)

_PAPER = "Carlini et al. 2019"

# Iterative L-inf attacks (normalised names) -> the single-step attack they must beat.
_SINGLE_STEP_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "pgd", "bim", "ifgsm", "mifgsm", "difgsm", "tifgsm", "nifgsm", "sinifgsm", "vmifgsm", "vnifgsm",
            "eotpgd", "segpgd", "cospgd", "apgd", "apgdt", "upgd", "projectedgradientdescent",
            "basiciterativemethod", "autoprojectedgradientdescent",
        ),
        "fgsm",
    ),
    "ifgsm2": "fgsm2",
}
_SINGLE_STEP_ALIASES = {"fastgradientmethod": "fgsm"}


@dataclass(frozen=True)
class Check:
    """One evaluated check instance: passed or failed, the rows (cells) it read, and what to do."""

    name: str
    ok: bool
    cells: tuple[str, ...]
    message: str
    remedy: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for result files."""
        return {"name": self.name, "ok": self.ok, "cells": list(self.cells), "message": self.message, "remedy": self.remedy}


def failed(checks: Iterable[Check]) -> list[Check]:
    """The checks that did not pass, in order."""
    return [c for c in checks if not c.ok]


# --- helpers ---------------------------------------------------------------------------------------


def _score(row: Mapping[str, Any], key: str) -> float | None:
    """A finite float score, or None (missing / NaN / not a number) so the row is skipped."""
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _norm(name: Any) -> str | None:
    """Attack names compare case- and punctuation-insensitively ("I-FGSM" == "ifgsm")."""
    if name is None:
        return None
    return re.sub(r"[^a-z0-9]", "", str(name).lower()) or None


def _num(x: float) -> str:
    return f"{x:.4g}"


def _eps(eps: float | None) -> str:
    """A budget as n/255 when it is one (the [0, 1] image convention), else as a plain number."""
    if eps is None:
        return "no Lp budget"
    k = eps * 255
    if 0 < eps <= 1 and k >= 0.5 and abs(k - round(k)) <= 0.01:
        return f"{round(k):g}/255"
    return f"{eps:.4g}"


def _eps_key(eps: Any) -> float | None:
    return None if eps is None else round(float(eps), 9)


def _attacked(row: Mapping[str, Any]) -> frozenset[str]:
    a = row.get("attacked") or ()
    return frozenset([a] if isinstance(a, str) else a)


def _subset_name(subset: Iterable[str], order: Sequence[str]) -> str:
    pos = {m: i for i, m in enumerate(order)}
    return "+".join(sorted(subset, key=lambda m: (pos.get(m, len(pos)), m))) or "nothing"


def _attack_label(attack: Any, toolkit: Any, steps: Any) -> str:
    label = str(attack).upper() if attack is not None else "the attack"
    extra = [str(toolkit)] if toolkit else []
    if steps is not None:
        extra.append(f"{steps} steps")
    return f"{label} ({', '.join(extra)})" if extra else label


def _seed_text(seed: Any, rows: Sequence[Mapping[str, Any]]) -> str:
    """" (seed N)" where the rows hold several seeds (each seed's rows are checked apart: pooling them
    compared one seed's curve with another's)."""
    return f" (seed {seed})" if seed is not None and len({r.get("seed") for r in rows}) > 1 else ""


def _applies(row: Mapping[str, Any]) -> bool:
    return bool(row.get("applies", True))


# --- the checks ------------------------------------------------------------------------------------


def _remedy_monotone(task: str) -> str:
    if task == "segmentation":
        return ("pixel cross-entropy at large eps drives almost every pixel to one class, which raises that "
                "class's IoU: score object classes only (exclude 'unlabeled'/background) and use a loss matched "
                "to the metric (e.g. SegPGD/CosPGD)")
    return (f"suspect gradient masking or a failing optimiser ({_PAPER} §5.2): run more steps and random "
            "restarts, check the loss rises at every step, and try a gradient-free attack")


def _check_monotone(rows: list[dict], metric: str, task: str, order: Sequence[str], tol: float) -> list[Check]:
    groups: dict[tuple, list[tuple[float, float, str]]] = {}
    for r in rows:
        if r.get("kind") != "attack" or r.get("eps") is None:
            continue
        m = _score(r, metric)
        if m is None:
            continue
        key = (_norm(r.get("attack")), r.get("toolkit"), r.get("steps"), _attacked(r), r.get("seed"))  # one curve per seed
        groups.setdefault(key, []).append((float(r["eps"]), m, r["cell"]))
    out = []
    for key, pts in groups.items():
        if len({_eps_key(e) for e, _, _ in pts}) < 2:
            continue
        pts.sort(key=lambda p: p[0])
        rises = [(a, b) for a, b in combinations(pts, 2) if a[0] < b[0] and b[1] > a[1] + tol]
        attack = next(r.get("attack") for r in rows if r["cell"] == pts[0][2])
        label = _attack_label(attack, key[1], key[2])
        curve = " -> ".join(f"{_num(m)} ({_eps(e)})" for e, m, _ in pts)
        verb = "rises" if rises else "does not rise"
        msg = f"{metric} {verb} with eps under {label} on {_subset_name(key[3], order)}{_seed_text(key[4], rows)}: {curve}"
        if rises:
            a, b = max(rises, key=lambda p: p[1][1] - p[0][1])
            msg += f" (largest rise +{_num(b[1] - a[1])}, from {_eps(a[0])} to {_eps(b[0])})"
        out.append(Check("monotone-eps", not rises, tuple(c for _, _, c in pts), msg, _remedy_monotone(task)))
    return out


def _check_iterative(rows: list[dict], metric: str, order: Sequence[str], tol: float) -> list[Check]:
    singles: dict[tuple, list[tuple[dict, float]]] = {}
    for r in rows:
        name = _norm(r.get("attack"))
        name = _SINGLE_STEP_ALIASES.get(name, name) if name else name
        m = _score(r, metric)
        if r.get("kind") == "attack" and name in ("fgsm", "fgsm2") and r.get("eps") is not None and m is not None:
            singles.setdefault((name, _eps_key(r["eps"]), _attacked(r), r.get("seed")), []).append((r, m))
    remedy = (f"the iterative attack is weaker than one step ({_PAPER} §5.2): raise steps / step size, add random "
              "restarts, check the gradient reaches the input (not zero or NaN) and the loss rises each step")
    out = []
    for r in rows:
        single = _SINGLE_STEP_OF.get(_norm(r.get("attack")) or "")
        m = _score(r, metric)
        if r.get("kind") != "attack" or single is None or r.get("eps") is None or m is None:
            continue
        for s, sm in singles.get((single, _eps_key(r["eps"]), _attacked(r), r.get("seed")), []):
            ok = m <= sm + tol
            rel = "<=" if ok else ">"
            msg = (f"{metric} under {_attack_label(r.get('attack'), r.get('toolkit'), r.get('steps'))} = {_num(m)} "
                   f"{rel} {_num(sm)} under {_attack_label(s.get('attack'), s.get('toolkit'), None)} at "
                   f"{_eps(float(r['eps']))} on {_subset_name(_attacked(r), order)}")
            if not ok:
                msg += " (the iterative attack is weaker)"
            out.append(Check("iterative-vs-single-step", ok, (r["cell"], s["cell"]), msg, remedy))
    return out


def _check_transfer(transfer: Mapping[str, Any] | None, tol: float) -> list[Check]:
    if not transfer or not transfer.get("values"):
        return []
    metric = transfer.get("metric") or "score"
    by_target: dict[str, dict[str, tuple[str, float]]] = {}
    for key, value in transfer["values"].items():
        parts = [p.strip() for p in str(key).split("->")]
        v = _score({"v": value}, "v")
        if len(parts) != 2 or v is None:
            continue
        by_target.setdefault(parts[1], {})[parts[0]] = (str(key), v)
    targets = list(transfer.get("targets") or []) + [t for t in by_target if t not in (transfer.get("targets") or [])]
    remedy = (f"the attack is weaker on the model it was crafted on than as a transfer ({_PAPER} §5.4): gradient "
              "masking suspected on that model; evaluate it with transfer, black-box (e.g. Square) and EOT attacks "
              "and report the strongest")
    out = []
    for t in targets:
        srcs = by_target.get(t, {})
        if t not in srcs or len(srcs) < 2:
            continue
        wkey, wv = srcs[t]
        others = [(s, k, v) for s, (k, v) in srcs.items() if s != t]
        beaten = [(s, k, v) for s, k, v in others if wv > v + tol]
        if beaten:
            msg = (f"{metric} on {t}: white box {_num(wv)} > transfer "
                   + ", ".join(f"{_num(v)} from {s}" for s, _, v in beaten))
        else:
            msg = f"{metric} on {t}: white box {_num(wv)} <= every transfer (min {_num(min(v for _, _, v in others))})"
        cells = (wkey, *(k for _, k, _ in (beaten or others)))
        out.append(Check("whitebox-vs-transfer", not beaten, cells, msg, remedy))
    return out


def _check_superset(rows: list[dict], metric: str, order: Sequence[str], tol: float) -> list[Check]:
    groups: dict[tuple, list[tuple[dict, float]]] = {}
    for r in rows:
        m = _score(r, metric)
        if m is None or not _attacked(r):
            continue
        if r.get("group") is not None:
            key: tuple = ("group", r["group"], None, None, None, r.get("seed"))
        elif r.get("kind") == "attack":
            key = ("attack", _norm(r.get("attack")), r.get("toolkit"), _eps_key(r.get("eps")), r.get("steps"), r.get("seed"))
        else:
            continue
        groups.setdefault(key, []).append((r, m))
    remedy = ("attacking more modalities is weaker than attacking fewer, though the attacker may leave the extra ones "
              "clean: attack supersets jointly and take the worst case over subsets "
              "(mmfusion_attacks.joint.worst_case_over_subsets)")
    out = []
    for key, members in groups.items():
        for sup, sm in members:
            subs = [(r, m) for r, m in members if _attacked(r) < _attacked(sup)]
            if not subs:
                continue
            beaten = [(r, m) for r, m in subs if sm > m + tol]
            where = f"group '{key[1]}'" if key[0] == "group" else (
                f"{_attack_label(sup.get('attack'), key[2], key[4])} at {_eps(sup.get('eps'))}") + _seed_text(key[5], rows)
            sname = _subset_name(_attacked(sup), order)
            if beaten:
                msg = f"{metric} in {where}: {sname} {_num(sm)} > " + ", ".join(
                    f"{_subset_name(_attacked(r), order)} {_num(m)}" for r, m in beaten)
            else:
                msg = f"{metric} in {where}: {sname} {_num(sm)} <= every subset (max {_num(max(m for _, m in subs))})"
            cells = (sup["cell"], *(r["cell"] for r, _ in (beaten or subs)))
            out.append(Check("superset-vs-subset", not beaten, cells, msg, remedy))
    return out


def _check_sanity(rows: list[dict], clean: Mapping[str, Any], needed: frozenset[str], order: Sequence[str],
                  threshold: float, floor: float) -> list[Check]:
    c = _score(clean, "accuracy")
    if c is None:
        return []
    limit = max(floor, threshold * c)
    remedy = (f"the attack is not reaching the model's decision: use BPDA for non-differentiable parts ({_PAPER} §4.7), "
              "EOT for randomness (§4.6), transfer from an undefended surrogate (§4.5) and gradient-free attacks "
              "such as Square (§4.4)")
    out = []
    for r in rows:
        a = _score(r, "accuracy")
        if r.get("kind") != "sanity" or a is None or not _applies(r) or not needed or not needed <= _attacked(r):
            continue
        ok = a <= limit
        head = "" if ok else f"gradient masking suspected ({_PAPER} §5.3, 'Perform an unbounded attack'): "
        msg = (f"{head}accuracy {_num(a)} {'<=' if ok else '>'} {_num(limit)} = max({_num(floor)}, {_num(threshold)} x "
               f"clean {_num(c)}) under the unbounded {_attack_label(r.get('attack'), r.get('toolkit'), r.get('steps'))} "
               f"on {_subset_name(_attacked(r), order)}")
        out.append(Check("unbounded-sanity", ok, (r["cell"],), msg, remedy))
    return out


def _check_ignored(rows: list[dict], clean: Mapping[str, Any], task: str, ignored: frozenset[str],
                   order: Sequence[str]) -> list[Check]:
    keys = ["accuracy"] + (["mIoU"] if task == "segmentation" else [])
    remedy = ("attacking a modality the model does not use changed its output: the frozen-modality pairing is broken "
              "(rows re-paired, shuffled or re-sampled) or the model is not ignoring that modality")
    out = []
    for r in rows:
        subset = _attacked(r)
        if _applies(r):
            if not (subset and ignored and subset <= ignored):
                continue
            why = "ignored by construction"
        else:
            why = "not read by the model"
        diffs, same = [], []
        for k in keys:
            v, cv = _score(r, k), _score(clean, k)
            if v is None or cv is None:
                continue
            if v == cv:
                same.append(f"{k} {_num(v)}")
            else:
                diffs.append(f"{k} {v:.6g} vs clean {cv:.6g}")
        if not diffs and not same:
            continue
        sname = _subset_name(subset, order)
        if diffs:
            msg = f"{r['cell']} attacks {sname} ({why}) but differs from clean: " + ", ".join(diffs)
        else:
            msg = f"{r['cell']} attacks {sname} ({why}) and equals clean: " + ", ".join(same)
        out.append(Check("ignored-modality", not diffs, (r["cell"],), msg, remedy))
    return out


# --- public entry points ---------------------------------------------------------------------------


def check_experiment(exp: Mapping[str, Any], *, tolerance: float = 0.0, sanity_threshold: float = 0.1,
                     sanity_floor: float = 0.05) -> list[Check]:
    """Every check instance that can be evaluated on ``exp`` (passed ones too, so a report can say so).

    ``tolerance``: metric noise allowed before an ordering check fails (same units as the metric; not used
    by ``ignored-modality``, which is exact). ``sanity_threshold`` / ``sanity_floor``: an unbounded attack
    passes when accuracy <= max(floor, threshold x clean accuracy) (see the module docstring).
    """
    rows = [r for r in exp.get("rows") or [] if r.get("cell") is not None]
    metric = exp.get("metric") or ("mIoU" if exp.get("task") == "segmentation" else "accuracy")
    task = exp.get("task") or "classification"
    order = list(exp.get("modalities") or [])
    ignored = frozenset(exp.get("ignored") or ())
    clean = exp.get("clean") or {}
    needed = frozenset(order) - ignored
    return [
        *_check_monotone(rows, metric, task, order, tolerance),
        *_check_iterative(rows, metric, order, tolerance),
        *_check_transfer(exp.get("transfer"), tolerance),
        *_check_superset(rows, metric, order, tolerance),
        *_check_sanity(rows, clean, needed, order, sanity_threshold, sanity_floor),
        *_check_ignored(rows, clean, task, ignored, order),
    ]


def annotate_rows(exp: Mapping[str, Any], checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Copies of ``exp['rows']``, each with ``"checks"``: the names of failed checks that involve it."""
    bad: dict[str, list[str]] = {}
    for c in failed(checks):
        for cell in c.cells:
            names = bad.setdefault(cell, [])
            if c.name not in names:
                names.append(c.name)
    return [{**r, "checks": list(bad.get(r.get("cell"), []))} for r in exp.get("rows") or []]


def format_checks(checks: Sequence[Check]) -> str:
    """Plain-text warnings for the failed checks, then a one-line tally."""
    bad = failed(checks)
    lines = [f"WARNING {c.name}: {c.message.rstrip('.')}. Remedy: {c.remedy}" for c in bad]
    lines.append(f"validity checks: {len(checks) - len(bad)} passed, {len(bad)} failed")
    return "\n".join(lines)
