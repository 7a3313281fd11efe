"""The presets' own tables, by name: a spec with a top-level ``table: NAME`` is printed with that
preset's table after ``mmfusion-attacks run``, exactly as the preset script prints it (both call
:func:`format_preset_table` on the run's summary), so ``run`` on a preset's ``--print-spec`` output
reproduces the preset's table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["PRESET_TABLES", "format_preset_table", "console_text"]

#: table name -> "module:function" taking the run's summary and returning the table's text
PRESET_TABLES: dict[str, str] = {
    "rgbt": "mmfusion_attacks.harness.rgbt:summary_table",
    "vl": "mmfusion_attacks.harness.vl:summary_table",
    "joint": "mmfusion_attacks.harness.joint:summary_table",
    "contrastive": "mmfusion_attacks.harness.contrastive:summary_table",
    "defences": "mmfusion_attacks.harness.defences:summary_table",
}


def format_preset_table(summary: Mapping[str, Any]) -> str | None:
    """The preset table the summary's spec names (None when it names none)."""
    name = (summary.get("spec") or {}).get("table")
    if not name:
        return None
    if name not in PRESET_TABLES:
        raise KeyError(f"unknown preset table {name!r}; known: {sorted(PRESET_TABLES)}")
    module, _, attr = PRESET_TABLES[name].partition(":")
    return getattr(importlib.import_module(module), attr)(summary)


def console_text(summary: Mapping[str, Any], out: Any) -> str:
    """What ``mmfusion-attacks run`` and the preset scripts print after a run: each experiment's table
    with its validity checks, the preset's table when the spec names one, and where the reports are."""
    from pathlib import Path

    from .html_report import write_table_text
    from .validity import Check, format_checks

    parts = []
    for exp in summary["experiments"]:
        parts.append(write_table_text(exp))
        parts.append(format_checks([Check(**{**c, "cells": tuple(c["cells"])}) for c in exp.get("checks") or []]))
        parts.append("")
    preset = format_preset_table(summary)
    if preset is not None:
        parts += [preset, ""]
    parts.append(f"HTML report: {(Path(out) / 'report.html').resolve()}  (also report.md, results.csv, results.json)")
    return "\n".join(parts)
