"""The combined benchmark report, rebuilt from a stored summary: Markdown, one self-contained HTML file,
a flat CSV and the JSON summary, with robustness curves, validity warnings and qualitative examples.

No attack is re-run: everything comes from ``summary`` (see :func:`write_reports`).
"""

from __future__ import annotations

import base64
import csv
import difflib
import html
import io
import json
import math
import mimetypes
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CurveFigure",
    "robustness_figures",
    "render_markdown",
    "render_html",
    "write_csv",
    "to_jsonable",
    "word_diff",
    "write_table_text",
    "write_reports",
]

DASH = "—"
WARN = "⚠"
OPTIONAL_METRICS = ("mIoU", "mAcc", "IoU_R", "success_rate", "queries_per_example")
PREFIX_COLUMNS = ("experiment", "task", "headline_metric", "headline_value")


@dataclass(frozen=True)
class CurveFigure:
    """One robustness-curve PNG: where it was saved (relative to ``out_dir``), its bytes and its title."""

    experiment: str
    title: str
    relpath: str
    png: bytes


# --------------------------------------------------------------------------- small helpers


def _num(v: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, non-numbers)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _fmt(v: Any) -> str:
    """Display text for one value: NaN / None -> '—', floats to 3 decimals, lists joined with '+'."""
    if _is_missing(v):
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, float):
        return _fmt(v.item())
    if isinstance(v, float):
        f = _num(v)
        if f is None:
            return DASH
        return f"{f:.3f}" if abs(f) < 100 else f"{f:.1f}"
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt(x) for x in v) if v else DASH
    return str(v)


def _attacked(row: Mapping[str, Any]) -> str:
    a = row.get("attacked")
    if a is None:
        return DASH
    if isinstance(a, str):
        return a or "none"
    return "+".join(str(x) for x in a) if a else "none"


def _list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    try:
        return [str(x) for x in v]
    except TypeError:
        return [str(v)]


def _slug(s: str, taken: set[str] | None = None) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-.").lower() or "x"
    out, i = base, 2
    while taken is not None and out in taken:
        out, i = f"{base}-{i}", i + 1
    if taken is not None:
        taken.add(out)
    return out


def _metric(exp: Mapping[str, Any]) -> str:
    return str(exp.get("metric") or ("mIoU" if exp.get("task") == "segmentation" else "accuracy"))


def _title(exp: Mapping[str, Any]) -> str:
    return str(exp.get("title") or exp.get("name") or "experiment")


def _rows(exp: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in (exp.get("rows") or []) if isinstance(r, Mapping)]


def _checks(exp: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in (exp.get("checks") or []) if isinstance(c, Mapping)]


def _failed(exp: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in _checks(exp) if not c.get("ok", False)]


def _is_synthetic(exp: Mapping[str, Any]) -> bool:
    desc = exp.get("description") or {}
    texts = [str(exp.get("title", "")), str(exp.get("name", ""))]
    texts += [str(v) for v in desc.values()] if isinstance(desc, Mapping) else [str(desc)]
    return any("synthetic" in t.lower() for t in texts)


def _incomplete(exp: Mapping[str, Any]) -> str | None:
    shards = exp.get("shards")
    if isinstance(shards, Mapping):
        done, total = shards.get("done"), shards.get("total")
        if isinstance(done, int) and isinstance(total, int) and done < total:
            return f"partial results: {done}/{total} shards done"
    return None


def _columns(exp: Mapping[str, Any]) -> list[str]:
    """Metric columns: the headline, accuracy, then whichever optional metrics some row has."""
    rows, head = _rows(exp), _metric(exp)
    cols = [head]
    for m in ("accuracy", *OPTIONAL_METRICS):
        if m not in cols and (m == "accuracy" or any(m in r for r in rows)):
            cols.append(m)
    return cols


def _row_warning(row: Mapping[str, Any]) -> str:
    checks = _list(row.get("checks"))
    return f"{WARN} " + ", ".join(checks) if checks else ""


def _row_flags(row: Mapping[str, Any]) -> str:
    flags = _list(row.get("flags"))
    if row.get("applies") is False:
        flags.append("not applicable")
    return ", ".join(flags)


def _table(exp: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[bool]]:
    """(header, body cells as text, whether each row carries a warning)."""
    cols = _columns(exp)
    header = ["cell", "attacked", *cols, "flags", "warnings"]
    body, warn = [], []
    for r in _rows(exp):
        body.append([str(r.get("cell", DASH)), _attacked(r), *(_fmt(r.get(c)) for c in cols), _row_flags(r), _row_warning(r)])
        warn.append(bool(_list(r.get("checks"))))
    return header, body, warn


def _n_warnings(summary: Mapping[str, Any]) -> int:
    return sum(len(_failed(e)) for e in _experiments(summary))


def _experiments(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in (summary.get("experiments") or []) if isinstance(e, Mapping)]


def _transfer_grid(tr: Mapping[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    values = tr.get("values") or {}
    pairs: dict[tuple[str, str], Any] = {}
    for k, v in values.items():
        s, _, t = str(k).partition("->")
        pairs[(s.strip(), t.strip())] = v
    sources = [str(s) for s in tr.get("sources") or dict.fromkeys(s for s, _ in pairs)]
    targets = [str(t) for t in tr.get("targets") or dict.fromkeys(t for _, t in pairs)]
    return sources, targets, pairs


def word_diff(original: str, adversarial: str) -> list[tuple[str, list[str], list[str]]]:
    """Word-level opcodes: ``(tag, original words, adversarial words)``, tag in equal/replace/delete/insert."""
    a, b = str(original or "").split(), str(adversarial or "").split()
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [(tag, a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in sm.get_opcodes()]


def _read_image(out_dir: Path, rel: Any) -> tuple[str, bytes] | None:
    if not rel:
        return None
    p = out_dir / str(rel)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    return mime, data


# --------------------------------------------------------------------------- figures


def robustness_figures(exp: Mapping[str, Any], out_dir: str | Path, taken: set[str] | None = None) -> list[CurveFigure]:
    """One PNG per (attack, toolkit, steps) over rows of kind "attack": headline metric against eps, one
    line per attacked subset (per subset and seed when the rows hold several seeds: one line through
    every seed's points zigzags), clean as a dashed line. Saved under ``out_dir/figures/``."""
    from matplotlib.figure import Figure as MplFigure

    out_dir = Path(out_dir)
    metric, taken = _metric(exp), taken if taken is not None else set()
    groups: dict[tuple[Any, Any, Any], list[Mapping[str, Any]]] = {}
    for r in _rows(exp):
        if r.get("kind") == "attack" and _num(r.get("eps")) is not None and _num(r.get(metric)) is not None:
            groups.setdefault((r.get("attack"), r.get("toolkit"), r.get("steps")), []).append(r)
    clean = _num((exp.get("clean") or {}).get(metric))
    figs = []
    for (attack, toolkit, steps), rows in groups.items():
        units = {r.get("eps_unit") for r in rows}  # eps_255 rows (x/255) or eps rows (the modalities' own units)
        if None in units:  # a summary written before rows said which
            scale = 255.0 if all(_num(r["eps"]) <= 1 for r in rows) else 1.0
        else:
            scale = 255.0 if units == {"x/255"} else 1.0
        fig = MplFigure(figsize=(5.0, 3.4), dpi=90)
        ax = fig.add_subplot()
        lines: dict[str, list[tuple[float, float]]] = {}
        several = len({r.get("seed") for r in rows}) > 1
        for r in rows:
            label = f"{_attacked(r)} (seed {r.get('seed')})" if several else _attacked(r)
            lines.setdefault(label, []).append((_num(r["eps"]) * scale, _num(r[metric])))
        for subset, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=subset)
        if clean is not None:
            ax.axhline(clean, color="grey", linestyle="--", linewidth=1, label="clean")
        parts = [str(x) for x in (toolkit, f"steps={steps}" if steps is not None else None) if x is not None]
        title = f"{attack or 'attack'}" + (f" ({', '.join(parts)})" if parts else "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("eps (x/255)" if scale == 255.0 else ("eps (own units)" if units == {"own units"} else "eps"))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(title="attacked", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        name = _slug(f"{exp.get('name', 'exp')}_{attack}_{toolkit}_{steps}", taken) + ".png"
        path = out_dir / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        figs.append(CurveFigure(str(exp.get("name", "")), title, f"figures/{name}", buf.getvalue()))
    return figs


# --------------------------------------------------------------------------- plain text


def write_table_text(exp: Mapping[str, Any]) -> str:
    """A fixed-width plain-text table of one experiment's rows (with warning marks) for the console."""
    header, body, _ = _table(exp)
    lines = [_title(exp)]
    if _is_synthetic(exp):
        lines[0] += "  [SYNTHETIC DATA]"
    clean = exp.get("clean") or {}
    if clean:
        lines.append("clean: " + "  ".join(f"{k} {_fmt(v)}" for k, v in clean.items()))
    failed = _failed(exp)
    if failed:
        lines.append(f"{WARN} {len(failed)} validity warnings: " + ", ".join(str(c.get("name", "?")) for c in failed))
    if note := _incomplete(exp):
        lines.append(f"{WARN} {note}")
    tr = exp.get("transfer")
    if isinstance(tr, Mapping) and tr.get("values"):
        sources, targets, pairs = _transfer_grid(tr)
        width = max(len("crafted on \\ evaluated on"), *(len(s) for s in sources)) + 2
        lines += ["", f"transfer ({tr.get('metric', '')}): rows crafted on, columns evaluated on",
                  "crafted on \\ evaluated on".ljust(width) + "".join(t.rjust(max(len(t), 6) + 2) for t in targets)]
        for s in sources:
            lines.append(s.ljust(width) + "".join((_fmt(pairs[(s, t)]) if (s, t) in pairs else "-").rjust(max(len(t), 6) + 2)
                                                 for t in targets))
    if not body:
        if not (isinstance(tr, Mapping) and tr.get("values")):
            lines.append("(no rows)")
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    numeric = set(range(2, len(header) - 2))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines += ["", line(header), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in body]
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown

_MD_SPECIAL = re.compile(r"([\\`*_~\[\]|<>#&])")


def _md(v: Any) -> str:
    """Escape user text for Markdown (no raw HTML, no accidental emphasis or table breaks)."""
    return _MD_SPECIAL.sub(r"\\\1", str(v)).replace("\n", " ")


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    return out


def _md_synthetic(text: str) -> str:
    return re.sub(r"(?i)(synthetic)", r"**\1**", _md(text))


def render_markdown(
    summary: Mapping[str, Any], out_dir: str | Path, figures: Mapping[str, Sequence[CurveFigure]] | None = None
) -> str:
    """The whole report as Markdown; figures and qualitative PNGs are linked by path relative to ``out_dir``
    (figures keyed by experiment name)."""
    out_dir, figures = Path(out_dir), figures or {}
    exps, n_warn = _experiments(summary), _n_warnings(summary)
    out = [f"# Benchmark report: {_md(summary.get('name', 'report'))}", ""]
    out.append(f"**{WARN} {n_warn} validity warnings**" if n_warn else "✓ 0 validity warnings")
    out.append("")
    meta = [f"{k}: {_md(summary[k])}" for k in ("package_version", "created", "spec_path") if summary.get(k) is not None]
    if meta:
        out += ["  \n".join(meta), ""]
    taken: set[str] = set()
    anchors = [_slug(e.get("name", "experiment"), taken) for e in exps]
    if exps:
        out += ["## Contents", ""]
        out += [f"- [{_md(_title(e))}](#{a})" for e, a in zip(exps, anchors)]
        out.append("")
    for exp, anchor in zip(exps, anchors):
        out += _md_experiment(exp, anchor, figures.get(str(exp.get("name", "")), ()), out_dir)
    return "\n".join(out).rstrip() + "\n"


def _md_experiment(exp: Mapping[str, Any], anchor: str, figs: Sequence[CurveFigure], out_dir: Path) -> list[str]:
    metric = _metric(exp)
    out = [f'<a id="{anchor}"></a>', "", f"## {_md(_title(exp))}", ""]
    if _is_synthetic(exp):
        out += [f"**{WARN} SYNTHETIC DATA** — scores below are not measured on real data.", ""]
    failed, note = _failed(exp), _incomplete(exp)
    if failed or note:
        quote = [f"> **{WARN} {len(failed)} validity warnings**"] if failed else []
        quote += [f"> - **{_md(c.get('name', '?'))}**: {_md(c.get('message', ''))}" for c in failed]
        if note:
            quote.append(f"> - **{WARN} {note}**")
        out += [*quote, ""]
    desc = exp.get("description") or {}
    if isinstance(desc, Mapping):
        out += [f"- **{_md(k)}**: {_md_synthetic(str(v))}" for k, v in desc.items()]
    else:
        out.append(_md_synthetic(str(desc)))
    extra = [f"task: {_md(exp.get('task', DASH))}", f"headline metric: **{_md(metric)}** (higher = more robust)"]
    if _num(exp.get("seconds")) is not None:
        extra.append(f"{_num(exp['seconds']):.1f} s")
    shards = exp.get("shards")
    if isinstance(shards, Mapping):
        extra.append(f"shards {shards.get('done', '?')}/{shards.get('total', '?')}")
    out += [f"- {', '.join(extra)}", ""]
    clean = exp.get("clean") or {}
    out += ["### Clean scores", ""]
    out += _md_table(list(clean), [[_fmt(v) for v in clean.values()]]) if clean else ["(none)"]
    out += ["", "### Results", ""]
    header, body, _ = _table(exp)
    out += _md_table(header, body) if body else ["(no rows)"]
    out += ["", "### Validity checks", ""]
    checks = _checks(exp)
    if not checks:
        out.append("(no checks recorded)")
    for c in checks:
        name = _md(c.get("name", "?"))
        if c.get("ok", False):
            out.append(f"- ✓ {name}" + (f": {_md(c['message'])}" if c.get("message") else ""))
            continue
        out.append(f"- **{WARN} {name}**: {_md(c.get('message', ''))}")
        if c.get("remedy"):
            out.append(f"  - remedy: {_md(c['remedy'])}")
        cells = _list(c.get("cells"))
        if cells:
            shown = ", ".join(_md(x) for x in cells[:12]) + (f" … and {len(cells) - 12} more" if len(cells) > 12 else "")
            out.append(f"  - cells: {shown}")
    out.append("")
    if figs:
        out += ["### Robustness curves", ""]
        out += [f"![{_md(f.title)}]({f.relpath})" for f in figs]
        out.append("")
    tr = exp.get("transfer")
    if isinstance(tr, Mapping):
        sources, targets, pairs = _transfer_grid(tr)
        out += [f"### Transfer ({_md(tr.get('metric', metric))}; rows: crafted on, columns: evaluated on)", ""]
        out += _md_table(["crafted on \\ evaluated on", *targets], [[s, *(_fmt(pairs.get((s, t))) for t in targets)] for s in sources])
        out.append("")
    qual = [q for q in (exp.get("qualitative") or []) if isinstance(q, Mapping)]
    if qual:
        out += ["### Qualitative examples", ""]
        for q in qual:
            out += _md_qualitative(q, out_dir)
    return out


def _marked_words(q: Mapping[str, Any], escape: Any, removed: str, added: str) -> tuple[list[str], list[str]]:
    """The original and adversarial text as escaped words, changed ones wrapped in ``removed`` / ``added``."""
    orig: list[str] = []
    adv: list[str] = []
    for tag, a, b in word_diff(q.get("original", ""), q.get("adversarial", "")):
        same = tag == "equal"
        orig += [escape(w) if same else removed.format(escape(w)) for w in a]
        adv += [escape(w) if same else added.format(escape(w)) for w in b]
    return orig, adv


def _md_qualitative(q: Mapping[str, Any], out_dir: Path) -> list[str]:
    head = f"**{_md(q.get('cell', ''))}**" + (f" — {_md(q['caption'])}" if q.get("caption") else "")
    if q.get("kind") == "text":
        orig, adv = _marked_words(q, _md, "~~{}~~", "**{}**")
        return [head, "", f"- original: {' '.join(orig)}", f"- adversarial: {' '.join(adv)}", ""]
    if "path" in q:
        if _read_image(out_dir, q.get("path")) is None:
            return [head, "", f"**{WARN} missing: {_md(q.get('path'))}**", ""]
        target = f"<{q['path']}>" if " " in str(q["path"]) else str(q["path"])
        return [head, "", f"![{_md(q.get('caption') or q.get('cell', ''))}]({target})", ""]
    return [head, "", *(f"- {_md(k)}: {_md(v)}" for k, v in q.items() if k not in ("cell", "caption")), ""]


# --------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1,h2,h3{line-height:1.2}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.warn td{background:#fff3cd}td.warning{color:#a94400;font-weight:bold}
.warnbox{border-left:5px solid #d9534f;background:#fdecea;padding:.5em 1em;margin:1em 0}
.okbox{border-left:5px solid #5cb85c;background:#eaf6ea;padding:.5em 1em;margin:1em 0}
.badge{display:inline-block;padding:.1em .5em;border-radius:.3em;font-size:.8em;font-weight:bold;vertical-align:middle}
.synthetic{background:#ff9800;color:#fff}strong.syn{color:#c65100}
.meta{color:#666;font-size:.9em}ul.checks li.fail{color:#a94400}ul.checks li.pass{color:#2e7d32}
mark{background:#ffeb3b}del{background:#f8d7da;color:#721c24}
figure{display:inline-block;margin:.5em 1em .5em 0}figure img{max-width:100%;border:1px solid #ddd}
.missing{color:#a94400;font-style:italic}.text-pair{margin:.3em 0 1em}
"""


def _h(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _h_table(header: Sequence[str], body: Sequence[Sequence[str]], numeric: Collection[int] = (), row_classes: Sequence[str] = ()) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_h(x)}</th>" for x in header) + "</tr></thead>", "<tbody>"]
    for i, row in enumerate(body):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        cells = []
        for j, c in enumerate(row):
            klass = "num" if j in numeric else ("warning" if cls and j == len(row) - 1 else "")
            cells.append(f'<td class="{klass}">{_h(c)}</td>' if klass else f"<td>{_h(c)}</td>")
        out.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _h_synthetic(text: str) -> str:
    return re.sub(r"(?i)(synthetic)", r'<strong class="syn">\1</strong>', _h(text))


def _img(mime: str, data: bytes, alt: str) -> str:
    return f'<img alt="{_h(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def render_html(summary: Mapping[str, Any], out_dir: str | Path, figures: Mapping[str, Sequence[CurveFigure]] | None = None) -> str:
    """The whole report as one self-contained HTML page (inline CSS, images as data: URIs).
    Qualitative image paths are read relative to ``out_dir``."""
    out_dir, figures = Path(out_dir), figures or {}
    exps, n_warn = _experiments(summary), _n_warnings(summary)
    name = _h(summary.get("name", "report"))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>Benchmark report: {name}</title>"]
    out += [f"<style>{_CSS}</style>", "</head><body>", f"<h1>Benchmark report: {name}</h1>"]
    if n_warn:
        bad = [f"{_h(_title(e))}: {len(_failed(e))}" for e in exps if _failed(e)]
        out.append(f'<div class="warnbox"><strong>{WARN} {n_warn} validity warnings</strong> ({"; ".join(bad)})</div>')
    else:
        out.append('<div class="okbox">✓ 0 validity warnings</div>')
    meta = [f"{_h(k)}: {_h(summary[k])}" for k in ("package_version", "created", "spec_path") if summary.get(k) is not None]
    if meta:
        out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    taken: set[str] = set()
    anchors = [_slug(e.get("name", "experiment"), taken) for e in exps]
    if exps:
        out += ["<nav><h2>Contents</h2><ul>"]
        for e, a in zip(exps, anchors):
            marks = (' <span class="badge synthetic">SYNTHETIC</span>' if _is_synthetic(e) else "") + (
                f" {WARN} {len(_failed(e))}" if _failed(e) else ""
            )
            subs = ["clean", "results", "checks"] + (["curves"] if figures.get(str(e.get("name", ""))) else [])
            subs += (["transfer"] if isinstance(e.get("transfer"), Mapping) else []) + (["qualitative"] if e.get("qualitative") else [])
            sub = "".join(f'<li><a href="#{a}-{s}">{s}</a></li>' for s in subs)
            out.append(f'<li><a href="#{a}">{_h(_title(e))}</a>{marks}<ul>{sub}</ul></li>')
        out.append("</ul></nav>")
    for exp, anchor in zip(exps, anchors):
        out += _html_experiment(exp, anchor, figures.get(str(exp.get("name", "")), ()), out_dir)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_experiment(exp: Mapping[str, Any], a: str, figs: Sequence[CurveFigure], out_dir: Path) -> list[str]:
    metric = _metric(exp)
    badge = ' <span class="badge synthetic">SYNTHETIC DATA</span>' if _is_synthetic(exp) else ""
    out = [f'<section id="{a}">', f"<h2>{_h(_title(exp))}{badge}</h2>"]
    failed, note = _failed(exp), _incomplete(exp)
    if failed or note:
        items = [f"<li><strong>{_h(c.get('name', '?'))}</strong>: {_h(c.get('message', ''))}</li>" for c in failed]
        if note:
            items.append(f"<li><strong>{_h(note)}</strong></li>")
        title = f"{WARN} {len(failed)} validity warnings" if failed else f"{WARN} incomplete"
        out.append(f'<div class="warnbox"><strong>{title}</strong><ul>{"".join(items)}</ul></div>')
    desc = exp.get("description") or {}
    if isinstance(desc, Mapping):
        out.append("<ul>" + "".join(f"<li><strong>{_h(k)}</strong>: {_h_synthetic(str(v))}</li>" for k, v in desc.items()) + "</ul>")
    elif desc:
        out.append(f"<p>{_h_synthetic(str(desc))}</p>")
    extra = [f"task: {_h(exp.get('task', DASH))}", f"headline metric: <strong>{_h(metric)}</strong> (higher = more robust)"]
    if _num(exp.get("seconds")) is not None:
        extra.append(f"{_num(exp['seconds']):.1f} s")
    shards = exp.get("shards")
    if isinstance(shards, Mapping):
        extra.append(f"shards {_h(shards.get('done', '?'))}/{_h(shards.get('total', '?'))}")
    out.append(f'<p class="meta">{" · ".join(extra)}</p>')
    clean = exp.get("clean") or {}
    out.append(f'<h3 id="{a}-clean">Clean scores</h3>')
    out.append(_h_table(list(clean), [[_fmt(v) for v in clean.values()]], set(range(len(clean)))) if clean else "<p>(none)</p>")
    out.append(f'<h3 id="{a}-results">Results</h3>')
    header, body, warn = _table(exp)
    numeric = set(range(2, len(header) - 2))
    out.append(_h_table(header, body, numeric, ["warn" if w else "" for w in warn]) if body else "<p>(no rows)</p>")
    out.append(f'<h3 id="{a}-checks">Validity checks</h3>')
    checks = _checks(exp)
    items = []
    for c in checks:
        name = _h(c.get("name", "?"))
        if c.get("ok", False):
            items.append(f'<li class="pass">✓ {name}' + (f": {_h(c['message'])}" if c.get("message") else "") + "</li>")
            continue
        li = f'<li class="fail"><strong>{WARN} {name}</strong>: {_h(c.get("message", ""))}'
        if c.get("remedy"):
            li += f"<br>remedy: {_h(c['remedy'])}"
        cells = _list(c.get("cells"))
        if cells:
            li += f"<br>cells: {_h(', '.join(cells))}"
        items.append(li + "</li>")
    out.append(f'<ul class="checks">{"".join(items)}</ul>' if items else "<p>(no checks recorded)</p>")
    if figs:
        out.append(f'<h3 id="{a}-curves">Robustness curves</h3>')
        out += [f"<figure>{_img('image/png', f.png, f.title)}<figcaption>{_h(f.title)}</figcaption></figure>" for f in figs]
    tr = exp.get("transfer")
    if isinstance(tr, Mapping):
        sources, targets, pairs = _transfer_grid(tr)
        out.append(f'<h3 id="{a}-transfer">Transfer ({_h(tr.get("metric", metric))}; rows: crafted on, columns: evaluated on)</h3>')
        body_t = [[s, *(_fmt(pairs.get((s, t))) for t in targets)] for s in sources]
        out.append(_h_table(["crafted on \\ evaluated on", *targets], body_t, set(range(1, len(targets) + 1))))
    qual = [q for q in (exp.get("qualitative") or []) if isinstance(q, Mapping)]
    if qual:
        out.append(f'<h3 id="{a}-qualitative">Qualitative examples</h3>')
        out += [_html_qualitative(q, out_dir) for q in qual]
    out.append("</section>")
    return out


def _html_qualitative(q: Mapping[str, Any], out_dir: Path) -> str:
    cap = _h(q.get("cell", "")) + (f" — {_h(q['caption'])}" if q.get("caption") else "")
    if q.get("kind") == "text":
        orig, adv = _marked_words(q, _h, "<del>{}</del>", "<mark>{}</mark>")
        return (
            f'<div class="text-pair"><strong>{cap}</strong><br>original: {" ".join(orig)}'
            f"<br>adversarial: {' '.join(adv)}</div>"
        )
    if "path" in q:
        img = _read_image(out_dir, q.get("path"))
        if img is None:
            return f'<figure><p class="missing">missing: {_h(q.get("path"))}</p><figcaption>{cap}</figcaption></figure>'
        return f"<figure>{_img(img[0], img[1], q.get('caption') or q.get('cell', ''))}<figcaption>{cap}</figcaption></figure>"
    rest = "".join(f"<li>{_h(k)}: {_h(v)}</li>" for k, v in q.items() if k not in ("cell", "caption"))
    return f"<div><strong>{cap}</strong><ul>{rest}</ul></div>"


# --------------------------------------------------------------------------- csv / json


def to_jsonable(v: Any) -> Any:
    """A JSON-safe copy: NaN / inf -> None, tuples -> lists, numpy / tensor scalars -> Python, paths -> str."""
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "tolist"):
        return to_jsonable(v.tolist())
    if hasattr(v, "item"):
        return to_jsonable(v.item())
    return str(v)


def _csv_value(key: str, v: Any) -> str:
    v = to_jsonable(v)
    if v is None:
        return ""
    if isinstance(v, list):
        return ("+" if key == "attacked" else ";").join("" if x is None else str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def write_csv(summary: Mapping[str, Any], path: str | Path) -> Path:
    """One line per row of every experiment; prefixed by experiment, task and headline metric / value."""
    path = Path(path)
    records, keys = [], dict.fromkeys(PREFIX_COLUMNS)
    for exp in _experiments(summary):
        metric = _metric(exp)
        for r in _rows(exp):
            rec = {"experiment": exp.get("name", ""), "task": exp.get("task", ""), "headline_metric": metric,
                   "headline_value": r.get(metric)}
            for k, v in r.items():
                k = f"row.{k}" if k in PREFIX_COLUMNS else str(k)
                rec[k] = v
                keys.setdefault(k)
            records.append(rec)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(keys))
        w.writeheader()
        for rec in records:
            w.writerow({k: _csv_value(k, rec.get(k)) for k in keys})
    return path


# --------------------------------------------------------------------------- entry point


def write_reports(summary: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``results.csv``, ``results.json`` (and ``figures/*.png``) into
    ``out_dir``. Returns ``{"md", "html", "csv", "json"}`` paths, plus ``"figures"`` (the folder) when any."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    figures: dict[str, list[CurveFigure]] = {}
    for exp in _experiments(summary):
        figures.setdefault(str(exp.get("name", "")), []).extend(robustness_figures(exp, out_dir, taken))
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html", "csv": out_dir / "results.csv",
             "json": out_dir / "results.json"}
    paths["md"].write_text(render_markdown(summary, out_dir, figures), encoding="utf-8")
    paths["html"].write_text(render_html(summary, out_dir, figures), encoding="utf-8")
    write_csv(summary, paths["csv"])
    paths["json"].write_text(json.dumps(to_jsonable(summary), indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    if any(figures.values()):
        paths["figures"] = out_dir / "figures"
    return paths
