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

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.pytorch import PyTorchClassifier
from art.estimators.pytorch import PyTorchEstimator
from torch import nn

from mmfusion_attacks.errors import RowAlignmentError, UnsupportedAttackError
from mmfusion_attacks.fusion import FusionModel
from mmfusion_attacks.metrics import predicted_classes
from mmfusion_attacks.modality import normalize_norm
from mmfusion_attacks.runner import AttackDriver, Budget, register_driver
from mmfusion_attacks.surface import AttackSurface, frozen_model_state, unfrozen

__all__ = [
    "PyTorchSegmenter",
    "FusionClassifier",
    "FusionSegmenter",
    "to_art",
    "eps_array",
    "generate",
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


def _as_float32(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.dtype != np.float32 and np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
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
            y_t = predicted_classes(y_t)
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
        return torch.from_numpy(np.ascontiguousarray(_as_float32(x))).to(self._device)

    # ------------------------------------------------------------------ ART API
    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        """Logits ``(N, C, H, W)`` as float32 numpy."""
        self._model.train(mode=training_mode)
        x_pre, _ = self._apply_preprocessing(_as_float32(x), y=None, fit=False)
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
            x_pre, _ = self._apply_preprocessing(_as_float32(x) if not is_tensor else x.cpu().numpy(), y=None, fit=False)
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
        x_pre, _ = self._apply_preprocessing(_as_float32(x), y=None, fit=False)
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
        pred = predicted_classes(torch.as_tensor(y_pred))
        labels = self._labels(y).cpu()
        valid = self._valid(labels)
        wrong = ((pred != labels) & valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
        return (wrong >= self.success_fraction).numpy()

    def fit(self, x: np.ndarray, y: Any, batch_size: int = 128, nb_epochs: int = 10, training_mode: bool = True, **kwargs) -> None:
        """Train with the estimator's optimizer on per-pixel cross-entropy."""
        if self._optimizer is None:
            raise ValueError("fit() needs an optimizer: pass optimizer= when creating the PyTorchSegmenter")
        self._model.train(mode=training_mode)
        x_pre, _ = self._apply_preprocessing(_as_float32(x), y=None, fit=True)
        labels = self._labels(y)
        for _ in range(nb_epochs):
            order = torch.randperm(len(x_pre))
            for start in range(0, len(x_pre), batch_size):
                idx = order[start : start + batch_size]
                self._optimizer.zero_grad()
                loss = self._sample_loss(self._logits(self._to_tensor(x_pre[idx.numpy()])), labels[idx.to(labels.device)]).mean()
                loss.backward()
                self._optimizer.step()

    def clone_for_refitting(self) -> PyTorchSegmenter:
        """A copy with the same architecture, optimizer type and settings, weights reset, for refitting."""
        import copy

        model = copy.deepcopy(self._model)
        if self._optimizer is None:
            raise ValueError("clone_for_refitting needs an optimizer to refit with (pass optimizer=)")
        optimizer = type(self._optimizer)(model.parameters(), **self._optimizer.defaults)
        clone = type(self)(model, self.input_shape, self.nb_classes, optimizer=optimizer)
        for module in clone._model.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        params = self.get_params()
        for key in ("model", "optimizer", "input_shape", "nb_classes"):
            params.pop(key, None)
        clone.set_params(**params)
        return clone

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


@contextmanager
def _kept_state(module: nn.Module, *, params: bool) -> Iterator[None]:
    """Every module's train/eval mode restored afterwards (ART leaves the mode it set); with ``params``
    the parameters' gradients are neither computed nor touched (ART's ``loss_gradient`` calls
    ``zero_grad()``, which would wipe gradients the user accumulated)."""
    modes = [(m, m.training) for m in module.modules()]
    saved = [(p, p.grad, p.requires_grad) for p in module.parameters()] if params else []
    for p, _, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, grad, flag in saved:
            p.grad = grad
            p.requires_grad_(flag)


class Context(dict):
    """The estimator's context batch (every modality, by name); its repr is a short summary."""

    def __repr__(self) -> str:
        parts = []
        for name, value in self.items():
            shape = tuple(value.shape) if hasattr(value, "shape") else (len(value),)
            parts.append(f"{name}: {shape}")
        return "Context(" + ", ".join(parts) + ")"


class _FusionEstimator:
    """What both fusion estimators share: the input shape follows the surface's packing; the frozen
    modalities come from an explicit, documented context (:meth:`set_context`, :meth:`bound`) in which
    every row ART hands over is paired with its own example by content; model modes and the user's
    parameter gradients are restored after every call; float64 (ART's numpy default, FeatureSqueezing
    under numpy 2, HopSkipJump) is cast to float32 at the boundary."""

    _surface: AttackSurface
    _context_batch: Mapping[str, Any] | None
    _context_radius: Any

    def _adopt(self, model: Any, nb_classes: int | None, kwargs: dict[str, Any]) -> int:
        """Check the surface, hold it, and fill the defaults both constructors share."""
        if not isinstance(model, AttackSurface):
            raise TypeError(f"{type(self).__name__} wraps an AttackSurface (use to_art(fusion, attacked)), got {type(model).__name__}")
        self._surface = model
        nb_classes = nb_classes or model.fusion.num_classes
        if nb_classes is None:
            raise ValueError(f"{type(self).__name__} needs nb_classes (or FusionModel(num_classes=...))")
        kwargs.setdefault("device_type", _device_type(model))
        return nb_classes

    def __setstate__(self, state: dict[str, Any]) -> None:
        """After unpickling, hold the module ART calls: ``PyTorchClassifier.__getstate__`` pickles a shallow
        copy of the surface (``inner_model``) and ``__setstate__`` wraps that copy, so without this
        ``set_context`` would bind a surface that ``predict`` never uses."""
        parent = getattr(super(), "__setstate__", None)  # PyTorchClassifier has one; PyTorchSegmenter does not
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        inner = getattr(getattr(self, "_model", None), "_model", None)
        if isinstance(inner, AttackSurface):
            self._surface = inner

    def _init_context(self, context: Mapping[str, Any] | None, radius: Any) -> None:
        self._context_batch, self._context_radius = None, radius
        if context is not None:
            self.set_context(context, radius=radius)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._surface.packing is not None:
            return self._surface.packing.sample_shape
        given = getattr(self, "_input_shape", None)
        if given:
            return tuple(given)
        # declared image channels alone do not give the image size: (C,) would not be one sample's shape
        raise RuntimeError(
            f"the input shape of the surface for {list(self._surface.attacked)} is known once a batch is "
            "bound: pass sample= or context= (or input_shape=) to to_art(), or call est.set_context(batch)"
        )

    @property
    def surface(self) -> AttackSurface:
        return self._surface

    # ------------------------------------------------------------------ context
    @property
    def context(self) -> Mapping[str, Any] | None:
        """The examples (all modalities, by name) whose frozen modalities queries are paired with."""
        return self._context_batch

    @context.setter
    def context(self, batch: Mapping[str, Any] | None) -> None:
        if batch is None:
            self.clear_context()
        else:
            self.set_context(batch, radius=self._context_radius)

    def set_context(self, batch: Mapping[str, Any], *, radius: Any = None) -> Any:
        """Hold ``batch`` (every modality, by name) as the examples this estimator answers for.

        From then on ``predict``, ``fit``, ``loss_gradient``... and every ART attack or trainer may hand
        over rows of ``batch``'s attacked modalities in any order, subset or batch size, clean or
        perturbed within ``radius`` (in each modality's own units; default: its threat model): each
        row gets the frozen modalities of its own example, or a :class:`RowAlignmentError`. Returns the
        attacked modalities packed as this estimator's ``x`` (numpy, float32).
        """
        batch = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
        attacked = set(self._surface.attacked)  # ART's x is float32; frozen modalities are held as given (bit-identical)
        batch = {k: (v.float() if k in attacked and isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32 else v)
                 for k, v in batch.items()}
        x = self._surface.bind(batch, radius=radius, pairing="content")  # ART shuffles: never by position
        self._context_batch, self._context_radius = Context(batch), radius
        return x.detach().cpu().numpy()

    def clear_context(self) -> None:
        self._surface.unbind()
        self._context_batch = None

    @contextmanager
    def bound(self, batch: Mapping[str, Any], *, radius: Any = None, pairing: str = "content") -> Iterator[np.ndarray]:
        """``with est.bound(batch) as x:`` — :meth:`set_context` for the block only (the previous context
        returns afterwards); the model is not frozen, so training inside works."""
        previous = (self._surface._table, self._surface.packing, self._context_batch, self._context_radius)
        try:
            self._surface.bind(batch, radius=radius, pairing=pairing)  # type: ignore[arg-type]
            self._context_batch, self._context_radius = Context(batch), radius
            yield self._surface.pack(batch).cpu().numpy()
        finally:
            if previous[0] is not None:
                self._surface._table, self._surface.packing, self._context_batch, self._context_radius = previous
            else:
                self._surface._table, self._context_batch, self._context_radius = None, previous[2], previous[3]

    def x_for(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The attacked modalities of ``batch`` packed as this estimator's ``x`` (numpy, float32)."""
        return self._surface.pack(batch).detach().cpu().numpy().astype(np.float32)

    def check_pairing(self, x: Any, what: str = "x") -> np.ndarray:
        """The context example of every row of ``x`` (raises before any work when a row cannot be paired)."""
        t = torch.as_tensor(np.asarray(_as_float32(x)) if not isinstance(x, torch.Tensor) else x)
        try:
            return self._surface.pair(t.to(self._surface.fusion.device)).numpy()
        except RowAlignmentError as err:
            raise RowAlignmentError(f"{type(self).__name__}: {what}: {err}") from None

    # ------------------------------------------------------------------ state hygiene
    def _apply_preprocessing(self, x: Any, y: Any, fit: bool, **kwargs: Any) -> Any:
        x_pre, y_pre = super()._apply_preprocessing(_as_float32(x), y=y, fit=fit, **kwargs)  # type: ignore[misc]
        return _as_float32(x_pre), y_pre

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        with _kept_state(self._surface, params=False):
            return super().predict(_as_float32(x), *args, **kwargs)  # type: ignore[misc]

    def loss_gradient(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        with _kept_state(self._surface, params=True):
            return super().loss_gradient(_as_float32(x), y, *args, **kwargs)  # type: ignore[misc]

    def compute_loss(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        with _kept_state(self._surface, params=False):
            return super().compute_loss(_as_float32(x), y, *args, **kwargs)  # type: ignore[misc]

    def get_activations(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        with _kept_state(self._surface, params=False):
            return super().get_activations(_as_float32(x), *args, **kwargs)  # type: ignore[misc]

    def fit(self, x: Any, y: Any, *args: Any, **kwargs: Any) -> None:
        """ART's ``fit``, with every row checked against the context before training starts (rows are
        shuffled inside; each still meets its own example's frozen modalities)."""
        x = _as_float32(x)
        if self._surface.frozen:
            self.check_pairing(x, "fit")
        with unfrozen(self._surface), _kept_state(self._surface, params=False):
            super().fit(x, y, *args, **kwargs)  # type: ignore[misc]


class FusionClassifier(_FusionEstimator, PyTorchClassifier):
    """``PyTorchClassifier`` over an :class:`AttackSurface` (same constructor, so ART can clone it).

    :param model: the attack surface (``fusion.surface(attacked)``; ``to_art`` builds it).
    :param context: a batch (every modality, by name) to hold as the examples queries are paired with.
    :param radius: how far (each modality's own units) a query row may lie from its example.
    Everything else is ``PyTorchClassifier``'s.
    """

    estimator_params = PyTorchClassifier.estimator_params + ["context"]

    def __init__(
        self,
        model: AttackSurface,
        loss: nn.Module | None = None,
        input_shape: tuple[int, ...] | None = None,
        nb_classes: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        *args: Any,
        context: Mapping[str, Any] | None = None,
        radius: Any = None,
        **kwargs: Any,
    ) -> None:
        nb_classes = self._adopt(model, nb_classes, kwargs)
        super().__init__(model, loss or nn.CrossEntropyLoss(), tuple(input_shape or ()), nb_classes, optimizer, *args, **kwargs)
        self._init_context(context, radius)

    def class_gradient(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        with _kept_state(self._surface, params=True):
            return super().class_gradient(_as_float32(x), *args, **kwargs)

    def custom_loss_gradient(self, *args: Any, **kwargs: Any) -> Any:
        """ART's ``custom_loss_gradient`` (FeatureAdversaries): it calls ``zero_grad()`` and backpropagates
        into the parameters; the user's gradients and modes are kept."""
        with _kept_state(self._surface, params=True):
            return super().custom_loss_gradient(*args, **kwargs)

    def fit_generator(self, generator: Any, *args: Any, **kwargs: Any) -> None:
        """ART's ``fit_generator`` (each batch paired with its examples when queried); modes restored after."""
        with unfrozen(self._surface), _kept_state(self._surface, params=False):
            super().fit_generator(generator, *args, **kwargs)


class FusionSegmenter(_FusionEstimator, PyTorchSegmenter):
    """:class:`PyTorchSegmenter` over an :class:`AttackSurface` (same constructor, so it can be cloned)."""

    estimator_params = PyTorchSegmenter.estimator_params + ["context"]

    def __init__(
        self,
        model: AttackSurface,
        input_shape: tuple[int, ...] | None = None,
        nb_classes: int | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        radius: Any = None,
        **kwargs: Any,
    ) -> None:
        nb_classes = self._adopt(model, nb_classes, kwargs)
        kwargs.setdefault("ignore_index", model.fusion.ignore_index)
        super().__init__(model, tuple(input_shape or ()), nb_classes, **kwargs)
        self._init_context(context, radius)


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
    context: Mapping[str, Any] | None = None,
    radius: Any = None,
    units: str | None = None,
    budget: Mapping[str, float] | None = None,
    nb_classes: int | None = None,
    **kwargs: Any,
) -> FusionClassifier | FusionSegmenter:
    """One line from a :class:`FusionModel` to an ART estimator that exposes only ``attacked``.

    Args:
        sample: a batch that fixes the packing (and so ``input_shape``) up front, without holding it.
        context: a batch to hold as the examples every query is paired with (see
            :meth:`FusionClassifier.set_context`); ``run_attack`` binds its own batch instead.
        radius: the pairing radius for ``context`` (each modality's own units; default its threat model).
        units: what ART sees: ``"native"`` (each modality's own values) or ``"unit"`` (each mapped to
            [0, 1]). Default: native when the attacked modalities share one valid range, else unit (so
            ``clip_values`` are two floats, which JSMA and ZOO need; eps is then a fraction of each range).
        budget: ``{modality: eps}`` in each modality's own units: the attacked modalities are scaled so
            that ONE scalar eps, ``est.surface.eps``, is each modality's budget (for attacks that take only
            a scalar eps: PGD with random init, AutoPGD, Square...).
        nb_classes: defaults to the FusionModel's (or one forward pass of ``sample``).
    """
    if budget is not None and units is not None:
        raise ValueError("give either units= or budget=, not both")
    if budget is None and units is None:
        ranges = {fusion.modality(n).valid_range for n in ([attacked] if isinstance(attacked, str) else attacked)}
        units = "native" if len(ranges) == 1 else "unit"
    surface = AttackSurface(fusion, attacked, units=budget if budget is not None else units)
    probe = sample if sample is not None else context
    if probe is not None:
        surface.bind(probe)  # fixes the packing (and so input_shape) for the estimator
        if nb_classes is None and fusion.num_classes is None:
            with torch.no_grad(), frozen_model_state(fusion):
                nb_classes = int(fusion(probe).shape[1])
        surface.unbind()
    nb_classes = nb_classes or fusion.num_classes
    if nb_classes is None:
        raise ValueError("to_art needs nb_classes (or FusionModel(num_classes=...), or a sample batch)")
    kwargs.setdefault("clip_values", _clip_values(surface))
    if fusion.task == "segmentation":
        return FusionSegmenter(surface, nb_classes=nb_classes, context=context, radius=radius, **kwargs)
    return FusionClassifier(surface, nb_classes=nb_classes, context=context, radius=radius, **kwargs)


def eps_array(estimator: FusionClassifier | FusionSegmenter | AttackSurface, eps: Mapping[str, float]) -> np.ndarray:
    """A per-modality budget for ART's ``eps`` / ``eps_step``, given in each modality's own units and
    returned in the estimator's (shape ``(C, 1, 1)`` or ``(D,)``)."""
    surface = estimator if isinstance(estimator, AttackSurface) else estimator.surface
    return surface.toolkit_eps(eps).numpy().astype(np.float32)


#: ART attacks that take only a scalar eps (or crash with an array): refused up front with array eps.
SCALAR_EPS_ONLY = frozenset({"AutoProjectedGradientDescent", "AutoConjugateGradient", "SquareAttack", "UniversalPerturbation"})
#: ART attacks that crash on per-element clip values (JSMA: saliency_map.py IndexError; ZOO: broadcast).
SCALAR_CLIP_ONLY = frozenset({"SaliencyMapMethod", "ZooAttack"})
#: ART attacks that are targeted whatever their ``targeted`` attribute says.
ALWAYS_TARGETED = frozenset({"SaliencyMapMethod", "TargetedUniversalPerturbation"})


class ArtDriver(AttackDriver):
    toolkit = "art"
    row_aligned = ROW_ALIGNED
    within_budget = frozenset({"AutoProjectedGradientDescent", "SquareAttack"})
    universal = frozenset({"UniversalPerturbation", "TargetedUniversalPerturbation"})

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

    def preflight(self, attack: EvasionAttack, surface: AttackSurface, budget: Budget | None) -> None:
        name = type(attack).__name__
        eps = getattr(attack, "eps", None)
        array_eps = eps is not None and np.asarray(eps).size > 1
        if array_eps and (name in SCALAR_EPS_ONLY or (name.startswith("ProjectedGradientDescent") and getattr(attack, "num_random_init", 0) > 0)):
            raise UnsupportedAttackError(
                f"ART {name} cannot take a per-element eps array"
                + (" with num_random_init > 0 (its random start fails to broadcast)" if name.startswith("Projected") else "")
                + f": build the estimator with to_art(fusion, {list(surface.attacked)}, budget={{modality: eps}}) "
                "so that one scalar eps (est.surface.eps) is each modality's own budget"
            )
        packing = surface.packing
        if name == "SquareAttack" and packing is not None:
            if packing.layout != "channels":
                raise UnsupportedAttackError(
                    f"ART SquareAttack works on images only, but {list(surface.attacked)} have different sizes "
                    f"{[s[1:] for s in packing.shapes]} and are packed flat: attack them separately"
                )
            h, w = packing.sample_shape[1:]
            tile = max(int(round(np.sqrt(float(getattr(attack, "p_init", 0.8)) * h * w))), 1)
            if tile >= min(h, w):
                raise UnsupportedAttackError(
                    f"ART SquareAttack (p_init={getattr(attack, 'p_init', 0.8)}) draws squares of side {tile}, which must "
                    f"be smaller than the {h}x{w} image of {list(surface.attacked)} (it fails with 'high <= 0'): lower p_init"
                )
        clip = getattr(attack.estimator, "clip_values", None)
        if name in SCALAR_CLIP_ONLY and clip is not None and np.asarray(clip[0]).size > 1:
            raise UnsupportedAttackError(
                f"ART {name} fails on per-element clip values (the attacked modalities {list(surface.attacked)} "
                "have different ranges in the estimator's units): build the estimator with "
                "to_art(fusion, attacked, units='unit') so every modality is seen in [0, 1]"
            )

    def generate(self, attack: EvasionAttack, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x_np = x.detach().cpu().numpy().astype(np.float32)
        y_np = None if y is None else y.detach().cpu().numpy()
        return torch.from_numpy(np.asarray(attack.generate(x=x_np, y=y_np), dtype=np.float32))

    def generate_universal(self, attack: EvasionAttack, surface: AttackSurface, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """ART's universal loop queries one example at a time (``x_i + noise``, within the budget: paired by
        content) and runs its inner attacker on it; the inner attacker may move that row anywhere, so it
        runs with that example alone bound, and the prediction of its output is paired with it too."""
        table = surface.context
        assert table is not None
        make = attack._get_attack

        def get_attack(name: str, params: Any = None) -> Any:
            inner = make(name, params)
            plain = inner.generate

            def generate_one(x_i: np.ndarray, y: Any = None, **kwargs: Any) -> np.ndarray:
                (k,) = surface.pair(torch.as_tensor(np.asarray(x_i, dtype=np.float32)).to(x.device)).tolist()
                table.fallback = None
                row = {n: v[k : k + 1] if isinstance(v, torch.Tensor) else v[k : k + 1] for n, v in table.context.items()}
                outer = surface._table
                surface._table = type(table)(table.keys[k : k + 1], row, table.radius, attacked=table.attacked, pairing="broadcast")
                try:
                    return plain(x_i, y=y, **kwargs)
                finally:
                    surface._table = outer
                    table.fallback = k  # ART's next query predicts the inner attacker's output: same example (that query only)

            inner.generate = generate_one
            return inner

        attack._get_attack = get_attack
        try:
            return self.generate(attack, x, y)
        finally:
            del attack._get_attack
            table.fallback = None

    def budget(self, attack: EvasionAttack, surface: AttackSurface) -> Budget | None:
        eps, norm = getattr(attack, "eps", None), getattr(attack, "norm", None)
        if eps is None or norm is None:
            return None
        eps_t = torch.as_tensor(np.asarray(eps, dtype=np.float32))
        return Budget(normalize_norm(norm), float(eps_t) if eps_t.ndim == 0 else eps_t)

    def targeted(self, attack: EvasionAttack) -> bool:
        return type(attack).__name__ in ALWAYS_TARGETED or bool(getattr(attack, "targeted", False))

    def extras(self, attack: EvasionAttack) -> dict[str, Any]:
        if type(attack).__name__ in self.universal:
            return {
                "universal_perturbation": torch.as_tensor(np.asarray(attack.noise)),
                "fooling_rate": attack.fooling_rate,
                "converged": attack.converged,
            }
        return {}


def generate(attack: EvasionAttack, x: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
    """``attack.generate(x, y)`` for any ART attack on a fusion estimator with a context: rows of ``x``
    are paired with their examples first (an error before any work if one cannot be), then the attack
    runs batched where that is safe (attacks that keep row order, or query only within their budget)
    and one example at a time otherwise (DeepFool, Carlini, HopSkipJump, Boundary, ZOO...)."""
    driver = ArtDriver()
    surface = driver.surface(attack)
    est = attack.estimator
    x32 = np.asarray(_as_float32(np.asarray(x) if not isinstance(x, torch.Tensor) else x.cpu().numpy()))
    if not surface.frozen:
        return attack.generate(x32, y, **kwargs)
    idx = est.check_pairing(x32, "generate")
    table = surface.context
    assert table is not None
    mode = driver.batching(attack)
    budget = driver.budget(attack, surface)
    rows = {n: (v.index_select(0, torch.as_tensor(idx).to(v.device)) if isinstance(v, torch.Tensor) else [v[i] for i in idx]) for n, v in table.context.items()}
    outer = surface._table
    try:
        if mode in ("batch", "content", "universal") and budget is not None:
            radius = surface.budget_radius(budget.norm, budget.eps)
            keys = torch.as_tensor(x32).to(table.keys.device)
            surface._table = type(table)(keys, rows, radius, attacked=table.attacked, pairing="position" if mode == "batch" else "content")
            return attack.generate(x32, y, **kwargs)
        outs = []
        for i in range(len(x32)):
            row = {n: (v[i : i + 1] if isinstance(v, torch.Tensor) else v[i : i + 1]) for n, v in rows.items()}
            surface._table = type(table)(torch.as_tensor(x32[i : i + 1]).to(table.keys.device), row, table.radius, attacked=table.attacked, pairing="broadcast")
            outs.append(attack.generate(x32[i : i + 1], None if y is None else y[i : i + 1], **kwargs))
        return np.concatenate(outs)
    finally:
        surface._table = outer


register_driver(ArtDriver())


def _mode_keeping(fit: Any) -> Any:
    def fit_keeping_modes(self: Any, *args: Any, **kwargs: Any) -> Any:
        estimator = getattr(self, "_classifier", None)
        if not isinstance(estimator, _FusionEstimator):
            return fit(self, *args, **kwargs)
        with _kept_state(estimator.surface, params=False):
            return fit(self, *args, **kwargs)

    fit_keeping_modes.__doc__, fit_keeping_modes.__name__ = fit.__doc__, fit.__name__
    fit_keeping_modes._mmfusion_hook = True  # type: ignore[attr-defined]
    return fit_keeping_modes


def _install_trainer_hooks() -> None:
    """ART's adversarial trainers on a fusion estimator: every module's mode restored after ``fit`` (TRADES,
    AWP, OAAT and the certified trainers drive the model directly and leave it in training mode; the
    others go through the estimator's ``fit``, which already restores it). Other estimators: unchanged."""
    from art.defences.trainer import Trainer

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in {Trainer, *subclasses(Trainer)}:
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "_mmfusion_hook", False) and not getattr(fit, "__isabstractmethod__", False):
            cls.fit = _mode_keeping(fit)


_install_trainer_hooks()
