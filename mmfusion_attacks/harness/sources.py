"""What a spec's ``model`` and ``data`` entries build: a :class:`~mmfusion_attacks.fusion.FusionModel`
and an indexable stream of examples, checked in full before the first attack.

Data are read by index ranges (a shard is ``examples(start, stop)``), so ranks of a distributed run and
a resumed run see exactly the examples an uninterrupted single process sees. Every example of the
chosen split is decoded once by :meth:`ExperimentData.validate` before any model is built: a bad file
is reported with every other bad file at once, not minutes into the grid.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..fusion import FusionModel

__all__ = ["ExperimentData", "build_data", "build_model", "apply_wrappers", "without_defences", "model_fingerprint", "data_fingerprint"]

_NOT_MODALITIES = ("labels", "label", "name", "night", "uid", "id")


class ExperimentData:
    """A dataset as ``examples(start, stop) -> (inputs, labels or None)``."""

    def __init__(self, dataset: Any, description: str, *, has_labels: bool = True) -> None:
        self.dataset, self.description, self.has_labels = dataset, description, has_labels
        self._tensors: tuple[dict, torch.Tensor] | None = None
        self._indexed = hasattr(dataset, "tensors") and "indices" in inspect.signature(dataset.tensors).parameters

    def __len__(self) -> int:
        return len(self.dataset)

    def examples(self, start: int, stop: int) -> tuple[dict[str, Any], torch.Tensor | None]:
        if hasattr(self.dataset, "tensors"):
            if self._indexed:
                inputs, labels = self.dataset.tensors(list(range(start, stop)))
            else:
                if self._tensors is None:
                    self._tensors = self.dataset.tensors()
                full, all_labels = self._tensors
                inputs = {k: v[start:stop] for k, v in full.items()}
                labels = all_labels[start:stop]
            return dict(inputs), (torch.as_tensor(labels) if self.has_labels else None)
        items = [self.dataset[i] for i in range(start, stop)]
        return _collate(items, self.has_labels)

    def modalities(self) -> list[str]:
        inputs, _ = self.examples(0, min(1, len(self)))
        return list(inputs)

    def validate(self) -> None:
        """Decode every example once (the datasets raise, naming the file, on a bad one)."""
        check = getattr(self.dataset, "validate", None)
        if callable(check):
            check()
            return
        step = 64
        for start in range(0, len(self), step):
            self.examples(start, min(start + step, len(self)))


def _collate(items: Sequence[Any], has_labels: bool) -> tuple[dict[str, Any], torch.Tensor | None]:
    if not items:
        raise InputError("no examples to collate")
    if isinstance(items[0], tuple):
        xs, ys = zip(*items)
        inputs = {k: _stack([x[k] for x in xs]) for k in xs[0]}
        return inputs, (torch.as_tensor(ys) if has_labels else None)
    keys = [k for k in items[0] if k not in _NOT_MODALITIES]
    inputs = {k: _stack([it[k] for it in items]) for k in keys}
    label_key = "labels" if "labels" in items[0] else ("label" if "label" in items[0] else None)
    labels = None
    if has_labels and label_key is not None:
        labels = torch.stack([torch.as_tensor(it[label_key]) for it in items]).long()
    return inputs, labels


def _stack(values: list[Any]) -> Any:
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    if isinstance(values[0], np.ndarray):
        return torch.from_numpy(np.stack(values))
    return list(values)


class _Frames:
    """RGB-T PNG frames (HxWx4: RGB then thermal, the MF dataset's layout), without ground truth."""

    def __init__(self, paths: Sequence[str], size: Sequence[int] | None = None) -> None:
        self.paths, self.size = list(paths), (tuple(size) if size else None)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from .rgbt import load_frames

        batch = load_frames([self.paths[index]], self.size)
        return {"rgb": batch["rgb"][0], "ir": batch["ir"][0]}

    def validate(self) -> None:
        from .rgbt import read_frame

        problems = []
        for p in self.paths:
            try:
                read_frame(p)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise InputError(f"{len(problems)} of {len(self.paths)} RGB-T frame(s) cannot be used:\n  " + "\n  ".join(problems))


def build_data(data: Mapping[str, Any], *, seed: int = 0, labels: str = "auto") -> ExperimentData:
    """A spec's ``data`` entry as :class:`ExperimentData` (not yet validated: call ``validate()``)."""
    from ..data import create_dataset

    options = {k: v for k, v in data.items() if k != "name"}
    name = data["name"]
    if name == "rgbt-frames":
        dataset: Any = _Frames(options.get("paths", []), options.get("size"))
        description = f"{len(dataset)} RGB-T frame(s) without ground truth (pseudo-labels)"
        return ExperimentData(dataset, description, has_labels=False)
    from ..data import DATASETS

    if "seed" in inspect.signature(DATASETS.get(name)).parameters:
        options.setdefault("seed", seed)
    try:
        dataset = create_dataset(name, **options)
    except TypeError as exc:
        raise InputError(f"data: dataset '{name}' does not take these options ({exc})") from None
    synthetic = "synthetic" in name or bool(getattr(dataset, "synthetic", False))
    description = (f"SYNTHETIC '{name}' (generated by mmfusion_attacks, not real data)" if synthetic else f"'{name}'") + \
        f" {options.get('split', '')} split, {len(dataset)} examples".replace("  ", " ")
    if synthetic and "synthetic" not in name and getattr(dataset, "description", None):
        description += f": {dataset.description}"
    return ExperimentData(dataset, description, has_labels=labels != "pseudo")


def build_model(model: Mapping[str, Any], *, seed: int, device: str, progress: bool = True) -> FusionModel:
    """A spec's ``model`` entry as an eval-mode FusionModel on ``device``."""
    from ..models import create_model

    source = model.get("source", "registry")
    name = model["name"]
    seed = model.get("seed", seed)
    torch.manual_seed(seed)
    if source == "registry":
        options = dict(model.get("options") or {})
        if "num_classes" in model:
            options["num_classes"] = model["num_classes"]
        if model.get("weights"):
            options["weights"] = model["weights"]
        fusion = create_model(name, **options)
    elif source == "synthetic-rgbt":
        from ..zoo import synthetic_default

        size = tuple(model.get("size", (96, 128)))
        fusion = synthetic_default(name, steps=model.get("train_steps", 400), size=size, seed=seed, device=device, progress=progress)
    elif source == "synthetic-vl":
        from ..models.vl_training import vl_synthetic_default

        kwargs = {"image_size": model.get("image_size", 48)}
        if "train_size" in model:
            kwargs["n_train"] = model["train_size"]
        fusion = vl_synthetic_default(name, seed=seed, device=device, progress=progress, **kwargs)
    elif source == "synthetic-rgbt-classifier":
        from ..data import create_dataset
        from .defences import train_fusion

        x, y = create_dataset("synthetic-rgbt-scenes", split="train", size=model.get("train_size", 600)).tensors()
        adversarial = tuple(model["adversarial"]) if model.get("adversarial") else None
        fusion = train_fusion(x, y, adversarial=adversarial, eps=model.get("eps_255", 8.0) / 255, epochs=model.get("epochs", 12),
                              pgd_steps=model.get("pgd_steps", 1), seed=seed, device=device, defences=_defences(model.get("defences")))
    elif source == "synthetic-trimodal":
        from ..data import create_dataset
        from ..models.trimodal import train_trimodal

        x, y = create_dataset("synthetic-trimodal", split="train", size=model.get("train_size", 800), seed=seed).tensors()
        fusion = train_trimodal(create_model(name).to(device), x, y, seed=seed)
    elif source == "callable":
        module, _, attr = model["factory"].partition(":")
        try:
            factory = importlib.import_module(module)
            for part in attr.split("."):
                factory = getattr(factory, part)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"model.factory: cannot import {model['factory']!r} ({exc})") from None
        fusion = factory(**dict(model.get("options") or {}))
        if not isinstance(fusion, FusionModel):
            raise InputError(f"model.factory: {model['factory']!r} returned {type(fusion).__name__}, not a FusionModel")
    else:  # parse_spec refuses unknown sources
        raise InputError(f"model.source: unknown source {source!r}")
    return apply_wrappers(fusion.to(device).eval(), model.get("wrap") or ())


def _defences(spec: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """``{ir: {median: 3}}`` / ``{ir: {gaussian: 0.05}}`` as ART preprocessors inside the model (active in
    training and at test time)."""
    if not spec:
        return None
    from art.defences.preprocessor import GaussianAugmentation, SpatialSmoothing

    out = {}
    for modality, d in spec.items():
        (kind, value), = d.items()
        if kind == "median":
            out[modality] = SpatialSmoothing(window_size=int(value), channels_first=True, apply_fit=True)
        elif kind == "gaussian":
            out[modality] = GaussianAugmentation(sigma=float(value), augmentation=False, apply_fit=True, apply_predict=True)
        else:
            raise InputError(f"model.defences.{modality}: unknown defence {kind!r} (median, gaussian)")
    return out


def without_defences(fusion: FusionModel) -> FusionModel:
    """The same network (shared weights) without its preprocessing defences: what a plain attacker
    crafts on. The original keeps its defences."""
    import copy

    from torch import nn

    plain = copy.copy(fusion)
    plain._modules = dict(fusion._modules)
    plain.defences = nn.ModuleDict()
    return plain.eval()


def apply_wrappers(fusion: FusionModel, wrap: Sequence[Mapping[str, Any]]) -> FusionModel:
    """A spec's ``wrap`` list applied in order (at-scale, multiscale, random-resize-pad), ``undefended`` (the
    network without its preprocessing defences) wherever it stands."""
    from ..models.wrappers import at_scale, multiscale, random_resize_pad

    if any(w["kind"] == "undefended" for w in wrap):
        # the network without its defences wherever the list says so: stripped after another wrapper, the
        # wrapper's inner model would keep them
        fusion = without_defences(fusion)
    for w in wrap:
        kind = w["kind"]
        multiple = int(w.get("multiple", 32))
        if kind == "at-scale":
            fusion = at_scale(fusion, float(w["scale"]), multiple)
        elif kind == "multiscale":
            fusion = multiscale(fusion, tuple(float(x) for x in w.get("scales", (0.5, 0.75, 1.0))), multiple)
        elif kind == "random-resize-pad":
            fusion = random_resize_pad(fusion, float(w.get("low", 0.8)), float(w.get("high", 1.2)), multiple)
        elif kind == "undefended":
            continue  # done first
        else:  # parse_spec refuses unknown wrappers
            raise InputError(f"model.wrap: unknown wrapper {kind!r}")
    return fusion.eval()


def model_fingerprint(fusion: FusionModel) -> str:
    """sha256 over the model's parameters and buffers (names, shapes, dtypes, values): records made
    with other weights are never reused."""
    h = hashlib.sha256()
    for name, tensor in sorted({**dict(fusion.named_parameters()), **dict(fusion.named_buffers())}.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def data_fingerprint(inputs: Mapping[str, Any], labels: torch.Tensor | None) -> str:
    """sha256 over a shard's examples (tensor bytes, texts, labels)."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        value = inputs[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            for text in value:
                h.update(str(text).encode() + b"\x00")
    if labels is not None:
        h.update(labels.detach().cpu().contiguous().to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]
