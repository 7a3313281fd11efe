"""ART adapter: estimators over an attack surface, and a segmentation estimator ART lacks.

    est = to_art(fusion, "ir")                                   # classifier or segmenter, by task
    attack = ProjectedGradientDescent(est, eps=8/255, eps_step=2/255, max_iter=10)
    result = run_attack(attack, batch, labels)

- :class:`FusionClassifier` is a ``PyTorchClassifier`` whose model is the attack surface, so every ART
  classifier attack (FGSM ... HopSkipJump, ZOO, Boundary) sees only the attacked modalities.
- :class:`PyTorchSegmenter` is a general ART estimator for semantic segmentation (logits
  ``(N, C, H, W)``, labels ``(N, H, W)`` class ids, per-pixel cross-entropy), written in ART's
  conventions (``clip_values``, ``channels_first``, preprocessing, mixins) so it can be proposed
  upstream (ART issues #2222, #2291). It works with FGSM, PGD, BIM, MIM, and Square (pass
  ``loss=est.margin_loss, adv_criterion=est.adv_criterion``).
- Per-modality budgets in one run: ``eps=eps_array(est, {"rgb": 8/255, "ir": 16/255})``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.pytorch import PyTorchClassifier
from art.estimators.pytorch import PyTorchEstimator
from torch import nn

from mmfusion_attacks.errors import UnsupportedAttackError
from mmfusion_attacks.fusion import FusionModel
from mmfusion_attacks.modality import normalize_norm
from mmfusion_attacks.runner import AttackDriver, Budget, register_driver
from mmfusion_attacks.surface import AttackSurface

__all__ = [
    "PyTorchSegmenter",
    "FusionClassifier",
    "FusionSegmenter",
    "to_art",
    "eps_array",
    "ArtDriver",
    "ROW_ALIGNED",
]

#: ART attacks that query only whole (attack-batch-sized) slices of their input, in order.
#: All others (AutoPGD, DeepFool, Carlini, JSMA, Square, HopSkipJump, ZOO, Boundary, ...) take subsets
#: or re-batch and run one sample at a time.
ROW_ALIGNED = frozenset(
    {
        "FastGradientMethod",
        "ProjectedGradientDescent",
        "ProjectedGradientDescentNumpy",
        "ProjectedGradientDescentPyTorch",
        "BasicIterativeMethod",
        "MomentumIterativeMethod",
    }
)


def _float32(x: Any) -> Any:
    """ART's HopSkipJump and Boundary query in float64; PyTorch models want float32."""
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return x.astype(np.float32)
    return x


def _device_type(module: nn.Module) -> str:
    for p in module.parameters():
        return "gpu" if p.device.type == "cuda" else "cpu"
    return "cpu"


class PyTorchSegmenter(PyTorchEstimator):
    """ART estimator for PyTorch semantic segmentation models.

    :param model: module mapping ``x`` to logits ``(N, C, H, W)`` (dicts / tuples are unwrapped).
    :param input_shape: shape of one sample, e.g. ``(4, 480, 640)``.
    :param nb_classes: number of classes ``C``.
    :param ignore_index: label value excluded from the loss and the success criterion.
    :param success_fraction: a sample counts as adversarial when at least this fraction of its
        (non-ignored) pixels is misclassified (untargeted) or on target (targeted).
    :param optimizer: needed only for :meth:`fit`.
    """

    estimator_params = PyTorchEstimator.estimator_params + [
        "input_shape",
        "nb_classes",
        "ignore_index",
        "success_fraction",
        "optimizer",
    ]

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        nb_classes: int,
        *,
        ignore_index: int | None = None,
        success_fraction: float = 0.5,
        optimizer: torch.optim.Optimizer | None = None,
        channels_first: bool = True,
        clip_values: Any = None,
        preprocessing_defences: Any = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        device_type: str = "gpu",
    ) -> None:
        super().__init__(
            model=model,
            clip_values=clip_values,
            channels_first=channels_first,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=preprocessing,
            device_type=device_type,
        )
        if nb_classes < 2:
            raise ValueError("nb_classes must be at least 2")
        if not 0.0 < success_fraction <= 1.0:
            raise ValueError("success_fraction must be in (0, 1]")
        self._input_shape = tuple(input_shape)
        self._nb_classes = int(nb_classes)
        self.ignore_index = ignore_index
        self.success_fraction = success_fraction
        self._optimizer = optimizer
        self._model = model.to(self._device)

    # ------------------------------------------------------------------ properties
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @property
    def nb_classes(self) -> int:
        return self._nb_classes

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self._optimizer

    @property
    def device(self) -> torch.device:
        return self._device

    # ------------------------------------------------------------------ internals
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        from mmfusion_attacks.fusion import unwrap_logits

        logits = unwrap_logits(self._model(x))
        if logits.ndim != 4:
            raise ValueError(f"segmentation model must return (N, C, H, W) logits, got {tuple(logits.shape)}")
        return logits

    def _labels(self, y: Any) -> torch.Tensor:
        """Class ids ``(N, H, W)`` from ids, one-hot / scores ``(N, C, H, W)``, numpy or torch."""
        y_t = torch.as_tensor(y, device=self._device)
        if y_t.ndim == 4:
            y_t = y_t.argmax(1)
        if y_t.ndim != 3:
            raise ValueError(f"segmentation labels must be (N, H, W) ids or (N, C, H, W) scores, got {tuple(y_t.shape)}")
        return y_t.long()

    def _pixel_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy, ``(N, H, W)``, zero on ignored pixels."""
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return nn.functional.cross_entropy(logits, labels, ignore_index=ignore, reduction="none")

    def _valid(self, labels: torch.Tensor) -> torch.Tensor:
        if self.ignore_index is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.ignore_index

    def _sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = self._valid(labels).flatten(1)
        return (self._pixel_loss(logits, labels).flatten(1) * valid).sum(1) / valid.sum(1).clamp_min(1)

    def _to_tensor(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self._device, dtype=torch.float32)
        return torch.from_numpy(np.ascontiguousarray(_float32(x))).to(self._device)

    # ------------------------------------------------------------------ ART API
    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        """Logits ``(N, C, H, W)`` as float32 numpy."""
        self._model.train(mode=training_mode)
        x_pre, _ = self._apply_preprocessing(_float32(x), y=None, fit=False)
        outputs = []
        with torch.no_grad():
            for start in range(0, len(x_pre), batch_size):
                batch = self._to_tensor(x_pre[start : start + batch_size])
                outputs.append(self._logits(batch).detach().cpu().numpy().astype(np.float32))
        if not outputs:
            return np.zeros((0, self._nb_classes, *self._input_shape[1:]), dtype=np.float32)
        return self._apply_postprocessing(preds=np.concatenate(outputs), fit=False)

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs) -> Any:
        """Gradient of the mean per-pixel cross-entropy w.r.t. ``x``; torch in, torch out (same device)."""
        self._model.train(mode=training_mode)
        is_tensor = isinstance(x, torch.Tensor)
        if self.all_framework_preprocessing:
            x_grad = self._to_tensor(x.detach() if is_tensor else x).clone().requires_grad_(True)
            x_in, _ = self._apply_preprocessing(x_grad, y=None, fit=False, no_grad=False)
        else:
            x_pre, _ = self._apply_preprocessing(_float32(x) if not is_tensor else x.cpu().numpy(), y=None, fit=False)
            x_grad = self._to_tensor(x_pre).requires_grad_(True)
            x_in = x_grad
        logits = self._logits(x_in)
        labels = self._labels(y)
        loss = self._sample_loss(logits, labels).mean()
        (grad,) = torch.autograd.grad(loss, x_grad)
        if is_tensor:
            out: Any = grad
        else:
            out = grad.cpu().numpy()
        if not self.all_framework_preprocessing:
            out = self._apply_preprocessing_gradient(x, out)
        return out

    def compute_loss(self, x: np.ndarray, y: Any, reduction: str = "none", **kwargs) -> np.ndarray:
        """Per-sample mean pixel cross-entropy (``reduction`` ``"none"``, ``"mean"`` or ``"sum"``)."""
        x_pre, _ = self._apply_preprocessing(_float32(x), y=None, fit=False)
        self._model.eval()
        with torch.no_grad():
            losses = self._sample_loss(self._logits(self._to_tensor(x_pre)), self._labels(y)).cpu().numpy()
        if reduction == "mean":
            return np.asarray(losses.mean())
        if reduction == "sum":
            return np.asarray(losses.sum())
        return losses

    def margin_loss(self, x: np.ndarray, y: Any) -> np.ndarray:
        """Square-attack loss (lower = more adversarial): mean over pixels of true logit minus best other."""
        logits = torch.from_numpy(self.predict(x))
        labels = self._labels(y).cpu()
        true = logits.gather(1, labels.clamp(0, self._nb_classes - 1).unsqueeze(1)).squeeze(1)
        other = logits.scatter(1, labels.clamp(0, self._nb_classes - 1).unsqueeze(1), float("-inf")).amax(1)
        valid = self._valid(labels).flatten(1)
        margin = ((true - other).flatten(1) * valid).sum(1) / valid.sum(1).clamp_min(1)
        return margin.numpy()

    def adv_criterion(self, y_pred: np.ndarray, y: Any) -> np.ndarray:
        """Per-sample success for Square: fraction of misclassified pixels >= ``success_fraction``."""
        pred = torch.as_tensor(y_pred).argmax(1)
        labels = self._labels(y).cpu()
        valid = self._valid(labels)
        wrong = ((pred != labels) & valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
        return (wrong >= self.success_fraction).numpy()

    def fit(self, x: np.ndarray, y: Any, batch_size: int = 128, nb_epochs: int = 10, training_mode: bool = True, **kwargs) -> None:
        """Train with the estimator's optimizer on per-pixel cross-entropy."""
        if self._optimizer is None:
            raise ValueError("fit() needs an optimizer: pass optimizer= when creating the PyTorchSegmenter")
        self._model.train(mode=training_mode)
        x_pre, _ = self._apply_preprocessing(_float32(x), y=None, fit=True)
        labels = self._labels(y)
        for _ in range(nb_epochs):
            order = torch.randperm(len(x_pre))
            for start in range(0, len(x_pre), batch_size):
                idx = order[start : start + batch_size]
                self._optimizer.zero_grad()
                loss = self._sample_loss(self._logits(self._to_tensor(x_pre[idx.numpy()])), labels[idx.to(labels.device)]).mean()
                loss.backward()
                self._optimizer.step()

    def get_activations(self, x: np.ndarray, layer: int | str, batch_size: int = 128, framework: bool = False) -> Any:
        """Output of a named (or indexed) submodule, collected with a forward hook."""
        modules = dict(self._model.named_modules())
        names = [n for n in modules if n]
        name = names[layer] if isinstance(layer, int) else layer
        if name not in modules:
            raise ValueError(f"unknown layer {layer!r}; layers: {names[:20]}...")
        captured: list[torch.Tensor] = []
        handle = modules[name].register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            if framework:
                self._logits(self._to_tensor(x))
                return captured[0]
            self.predict(x, batch_size=batch_size)
        finally:
            handle.remove()
        return np.concatenate([c.detach().cpu().numpy() for c in captured])


class _SurfaceShape:
    """Mixin: the input shape follows the batch bound on the surface (ART reads it in Square, ZOO...)."""

    _surface: AttackSurface

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._surface.packing is not None:
            return self._surface.packing.sample_shape
        given = getattr(self, "_input_shape", None)
        if given:
            return given
        raise RuntimeError(
            f"the input shape of the surface for {list(self._surface.attacked)} is known once a batch is bound: "
            "pass sample= or input_shape= to to_art(), or build the attack inside `with est.surface.bound(one_sample):`"
        )

    @property
    def surface(self) -> AttackSurface:
        return self._surface


class FusionClassifier(_SurfaceShape, PyTorchClassifier):
    """``PyTorchClassifier`` over an :class:`AttackSurface`; casts ART's float64 queries to float32."""

    def __init__(self, surface: AttackSurface, nb_classes: int, *, loss: nn.Module | None = None, **kwargs: Any) -> None:
        self._surface = surface
        kwargs.setdefault("device_type", _device_type(surface))
        kwargs.setdefault("input_shape", ())
        super().__init__(model=surface, loss=loss or nn.CrossEntropyLoss(), nb_classes=nb_classes, **kwargs)

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        return super().predict(_float32(x), batch_size=batch_size, training_mode=training_mode, **kwargs)

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs) -> Any:
        return super().loss_gradient(_float32(x), y, training_mode=training_mode, **kwargs)

    def class_gradient(self, x: Any, label: Any = None, training_mode: bool = False, **kwargs) -> Any:
        return super().class_gradient(_float32(x), label=label, training_mode=training_mode, **kwargs)

    def compute_loss(self, x: Any, y: Any, reduction: str = "none", **kwargs) -> Any:
        return super().compute_loss(_float32(x), y, reduction=reduction, **kwargs)


class FusionSegmenter(_SurfaceShape, PyTorchSegmenter):
    """:class:`PyTorchSegmenter` over an :class:`AttackSurface`."""

    def __init__(self, surface: AttackSurface, nb_classes: int, **kwargs: Any) -> None:
        self._surface = surface
        kwargs.setdefault("device_type", _device_type(surface))
        kwargs.setdefault("input_shape", ())
        kwargs.setdefault("ignore_index", surface.fusion.ignore_index)
        super().__init__(surface, nb_classes=nb_classes, **kwargs)


def _clip_values(surface: AttackSurface) -> Any:
    bounds = surface.bounds()
    if bounds is None:
        return None
    lo, hi = bounds
    if isinstance(lo, torch.Tensor):
        return lo.numpy().astype(np.float32), hi.numpy().astype(np.float32)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise UnsupportedAttackError(
            f"ART needs finite clip values, but {list(surface.attacked)} mix bounded and unbounded modalities"
        )
    return lo, hi


def to_art(
    fusion: FusionModel,
    attacked: str | Sequence[str],
    *,
    sample: Mapping[str, Any] | None = None,
    nb_classes: int | None = None,
    **kwargs: Any,
) -> FusionClassifier | FusionSegmenter:
    """One line from a :class:`FusionModel` to an ART estimator that exposes only ``attacked``.

    ``sample`` (a batch) fixes the packing up front; it is needed only when attacked modalities are
    not all images with declared channels and differ in valid range. ``nb_classes`` defaults to the
    FusionModel's (or is read from one forward pass of ``sample``).
    """
    surface = AttackSurface(fusion, attacked)
    if sample is not None:
        surface.bind(sample)  # fixes the packing (and so input_shape) for the estimator
        if nb_classes is None and fusion.num_classes is None:
            with torch.no_grad():
                nb_classes = int(fusion(sample).shape[1])
        surface.unbind()
    nb_classes = nb_classes or fusion.num_classes
    if nb_classes is None:
        raise ValueError("to_art needs nb_classes (or FusionModel(num_classes=...), or a sample batch)")
    kwargs.setdefault("clip_values", _clip_values(surface))
    if fusion.task == "segmentation":
        return FusionSegmenter(surface, nb_classes, **kwargs)
    return FusionClassifier(surface, nb_classes, **kwargs)


def eps_array(estimator: FusionClassifier | FusionSegmenter | AttackSurface, eps: Mapping[str, float]) -> np.ndarray:
    """A per-modality budget for ART's ``eps`` / ``eps_step`` (shape ``(C, 1, 1)`` or ``(D,)``)."""
    surface = estimator if isinstance(estimator, AttackSurface) else estimator.surface
    return surface.per_element(eps).numpy().astype(np.float32)


class ArtDriver(AttackDriver):
    toolkit = "art"
    row_aligned = ROW_ALIGNED

    def accepts(self, attack: Any) -> bool:
        return isinstance(attack, EvasionAttack)

    def surface(self, attack: EvasionAttack) -> AttackSurface:
        estimator = attack.estimator
        surface = getattr(estimator, "model", None)
        if not isinstance(surface, AttackSurface):
            raise UnsupportedAttackError(
                f"ART {type(attack).__name__} was built on {type(estimator).__name__} over "
                f"{type(surface).__name__}; build it on to_art(fusion, attacked) so only the attacked "
                "modalities are exposed"
            )
        return surface

    def chunk_size(self, attack: EvasionAttack) -> int | None:
        return min(int(getattr(attack, "batch_size", 128)), 128)

    def generate(self, attack: EvasionAttack, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x_np = x.detach().cpu().numpy().astype(np.float32)
        y_np = None if y is None else y.detach().cpu().numpy()
        return torch.from_numpy(np.asarray(attack.generate(x=x_np, y=y_np), dtype=np.float32))

    def budget(self, attack: EvasionAttack, surface: AttackSurface) -> Budget | None:
        eps, norm = getattr(attack, "eps", None), getattr(attack, "norm", None)
        if eps is None or norm is None:
            return None
        eps_t = torch.as_tensor(np.asarray(eps, dtype=np.float32))
        return Budget(normalize_norm(norm), float(eps_t) if eps_t.ndim == 0 else eps_t)

    def targeted(self, attack: EvasionAttack) -> bool:
        return bool(getattr(attack, "targeted", False))


register_driver(ArtDriver())
