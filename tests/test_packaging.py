"""Every subpackage ships: pyproject lists each folder with an __init__.py (plus the adapters mapping)."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "mmfusion_attacks").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= listed, f"not packaged: {sorted(found - listed)}"
    assert config["package-dir"]["mmfusion_attacks.adapters"] == "adapters"
    assert "mmfusion_attacks.adapters" in listed and not (ROOT / "adapters" / "art").exists()
