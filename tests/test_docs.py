"""Every ```python block in README.md and docs/*.md runs (blocks of one file share a namespace)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_docs_have_snippets():
    assert python_blocks(ROOT / "README.md")
    assert python_blocks(ROOT / "docs" / "quickstart-art.md")
    assert python_blocks(ROOT / "docs" / "quickstart-torchattacks.md")


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_snippets_run(path, monkeypatch, tmp_path):
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    np.random.seed(0)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(python_blocks(path)):
        exec(compile(block, f"{path.name}[block {i}]", "exec"), namespace)
