"""FusionModel: any multi-input ``nn.Module`` seen through named modalities.

It knows how the wrapped network wants its inputs (keyword arguments, positional arguments, or one
tensor packed along channels as in the public MFNet / RTFNet code), applies per-modality
normalisation *inside* the model (so attack tensors stay in each modality's valid range), unwraps
outputs (dicts, tuples, Hugging Face ``ModelOutput``) to logits, and validates batches and labels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .errors import (
    LabelError,
    MissingModalityError,
    ModelOutputError,
    ShapeMismatchError,
    UnknownModalityError,
)
from .metrics import predicted_classes
from .modality import Modality, resolve_modality

__all__ = ["FusionModel", "unwrap_logits", "Task", "InputStyle", "OutputSelector"]

Task = Literal["classification", "segmentation"]
InputStyle = Literal["named", "positional", "packed"]
Batch = Mapping[str, Any]


OutputSelector = int | str | Callable[[Any], torch.Tensor]


def unwrap_logits(output: Any, key: OutputSelector | None = None) -> torch.Tensor:
    """Logits from whatever a model returns: a tensor, a dict / ``ModelOutput``, or a tuple / list.

    ``key`` selects them explicitly: a mapping key or attribute name (``"logits"``), an index into a
    tuple / list (``1`` for ``(aux, main)``), or a callable ``output -> tensor``. Without it, a tuple /
    list must hold exactly one tensor: with several (auxiliary heads, features) the first is not
    assumed to be the logits, a :class:`ModelOutputError` asks which one is.
    """
    if callable(key) and not isinstance(key, str):
        picked = key(output)
        if not isinstance(picked, torch.Tensor):
            raise ModelOutputError(f"the output selector returned {type(picked).__name__}, expected the logits tensor")
        return picked
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(key, int) and not isinstance(key, bool):
        if not isinstance(output, (tuple, list)):
            raise ModelOutputError(f"output={key} selects an index, but the model returned a {type(output).__name__}")
        if not -len(output) <= key < len(output) or not isinstance(output[key], torch.Tensor):
            raise ModelOutputError(
                f"output={key}: the model returned a {type(output).__name__} of {len(output)} item(s) "
                f"({_describe(output)}); item {key} is not a tensor"
            )
        return output[key]
    if isinstance(output, Mapping):  # dicts and transformers.ModelOutput (an OrderedDict)
        if key is not None:
            if key in output and isinstance(output[key], torch.Tensor):
                return output[key]
            raise ModelOutputError(f"output={key!r}: the model's output has no tensor under that key (keys {list(output)})")
        for k in ["logits", "out", "logits_per_image", "output", "pred"]:
            if k in output and isinstance(output[k], torch.Tensor):
                return output[k]
        raise ModelOutputError(
            f"model returned a mapping with keys {list(output)}; pass output= (output_key=) to say which holds the logits"
        )
    if isinstance(key, str):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
        raise ModelOutputError(f"output={key!r}: a model output of type {type(output).__name__} has no tensor {key!r}")
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)):
        tensors = [i for i, v in enumerate(output) if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return output[tensors[0]]
        if len(tensors) > 1:
            raise ModelOutputError(
                f"model returned a {type(output).__name__} with {len(tensors)} tensors ({_describe(output)}): which "
                f"holds the logits? Pass FusionModel(..., output=INDEX) (e.g. output={tensors[-1]} for (aux, main)) "
                "or a callable output -> logits"
            )
    raise ModelOutputError(f"cannot find logits in a model output of type {type(output).__name__}")


def _describe(items: Sequence[Any]) -> str:
    return ", ".join(
        f"{i}: {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"{i}: {type(v).__name__}" for i, v in enumerate(items)
    )


class FusionModel(nn.Module):
    """A multi-input model with named modalities, for classification or segmentation.

    Args:
        model: the network.
        modalities: its inputs, as :class:`Modality` objects or registered preset names, in the
            order used by ``"positional"`` and ``"packed"`` input styles.
        task: ``"classification"`` (logits ``(N, C)``) or ``"segmentation"`` (logits ``(N, C, H, W)``).
        num_classes: checked against the logits; inferred from them when omitted.
        input_style: ``"named"`` calls ``model(**{arg: tensor})``, ``"positional"`` calls
            ``model(*tensors)``, ``"packed"`` calls ``model(torch.cat(tensors, dim=1))``; or a callable
            ``(model, inputs_dict) -> output`` for anything else (tokenisers, extra arguments).
        arg_names: keyword name per modality for ``"named"`` (default: the modality name).
        normalize: ``{name: (mean, std)}`` applied inside ``forward`` (per channel or scalar).
        output: which part of the network's output holds the logits, when it returns more than one
            tensor: a dict key / attribute name, a tuple index (``1`` for ``(aux, main)``), or a callable
            ``output -> logits``. Without it a tuple or list with several tensors is an error (never the
            first one by assumption); dicts default to ``logits`` / ``out`` / ``logits_per_image``.
        output_key: the older name of ``output`` for dict keys.
        ignore_index: a segmentation label value that marks pixels to ignore (e.g. 255).
        defences: ``{name: defence}`` preprocessing defences applied to that modality inside the
            model, whichever modality is attacked (ART preprocessors with BPDA gradients, or torch
            modules; see :mod:`mmfusion_attacks.defences`).
    """

    #: where the weights come from, for reports (set by registry models that train themselves); None: unsaid
    origin: str | None = None

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[Modality | str],
        *,
        task: Task = "classification",
        num_classes: int | None = None,
        input_style: InputStyle | Callable[[nn.Module, dict[str, Any]], Any] = "named",
        arg_names: Mapping[str, str] | None = None,
        normalize: Mapping[str, tuple[Any, Any]] | None = None,
        output: OutputSelector | None = None,
        output_key: str | None = None,
        ignore_index: int | None = None,
        defences: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")
        if not callable(input_style) and input_style not in ("named", "positional", "packed"):
            raise ValueError(f"input_style must be 'named', 'positional', 'packed' or a callable, got {input_style!r}")
        mods = [resolve_modality(m) for m in modalities]
        if not mods:
            raise ValueError("a FusionModel needs at least one modality")
        names = [m.name for m in mods]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate modality names: {names}")
        if input_style == "packed" and any(m.kind != "image" for m in mods):
            raise ValueError("input_style='packed' concatenates image channels; all modalities must be images")
        self.model = model
        self.modalities: dict[str, Modality] = {m.name: m for m in mods}
        self.task: Task = task
        self.num_classes = num_classes
        self.input_style = input_style
        self.arg_names = {n: (arg_names or {}).get(n, n) for n in names}
        for n in arg_names or {}:
            self._check_known(n)
        if output is not None and output_key is not None and output != output_key:
            raise ValueError(f"output={output!r} and output_key={output_key!r} disagree: give one")
        if output is not None and not isinstance(output, (int, str)) and not callable(output):
            raise ValueError(f"output must be an index, a key or a callable, got {type(output).__name__}")
        if isinstance(output, bool):
            raise ValueError("output must be an index, a key or a callable, got a bool")
        #: the logits selector (see ``output``)
        self.output_key: OutputSelector | None = output if output is not None else output_key
        self.ignore_index = ignore_index
        self.amp_dtype: torch.dtype | None = None
        self._norm_names: list[str] = []
        for name, (mean, std) in (normalize or {}).items():
            mod = self._check_known(name)
            if not mod.is_tensor:
                raise ValueError(f"modality '{name}': normalize applies to tensor modalities only")
            mean_t, std_t = self._stat(mod, mean), self._stat(mod, std)
            for what, t in (("mean", mean_t), ("std", std_t)):
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"modality '{name}': normalisation {what} must be finite, got {t.flatten().tolist()}")
                if mod.kind == "image" and mod.channels is not None and t.numel() not in (1, mod.channels):
                    raise ValueError(
                        f"modality '{name}': normalisation {what} has {t.numel()} values but the modality has "
                        f"{mod.channels} channel(s); give one value or one per channel"
                    )
            if bool((std_t == 0).any()):
                raise ValueError(f"modality '{name}': normalisation std must be non-zero")
            self.register_buffer(f"_mean_{name}", mean_t, persistent=False)
            self.register_buffer(f"_std_{name}", std_t, persistent=False)
            self._norm_names.append(name)
        from .defences import ModalityDefence

        guards = {}
        for name, defence in (defences or {}).items():
            if not self._check_known(name).is_tensor:
                raise ValueError(f"modality '{name}': preprocessing defences apply to tensor modalities only")
            guards[name] = ModalityDefence(defence, name)
        self.defences = nn.ModuleDict(guards)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _stat(mod: Modality, value: Any) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if mod.kind == "image" and t.numel() > 1:
            return t.view(1, -1, 1, 1)
        return t.view(()) if t.numel() == 1 else t

    def _check_known(self, name: str) -> Modality:
        if name not in self.modalities:
            raise UnknownModalityError(
                f"unknown modality '{name}'; this model's modalities are {list(self.modalities)}"
            )
        return self.modalities[name]

    @property
    def names(self) -> list[str]:
        return list(self.modalities)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the wrapped network computes in (its first floating parameter's; float32 without any).
        Inputs of any floating dtype are cast to it inside ``forward``."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def modality(self, name: str) -> Modality:
        return self._check_known(name)

    # ------------------------------------------------------------------ validation
    def validate_inputs(self, inputs: Batch, *, check_range: bool = True) -> int:
        """Check a batch against the declared modalities; return the batch size.

        Raises a specific :class:`~mmfusion_attacks.errors.InputError` naming the modality on unknown
        or missing names, batch sizes that differ, wrong shapes or channels, NaN/inf, or out-of-range values.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping of modality name -> data, got {type(inputs).__name__}")
        for name in inputs:
            self._check_known(name)
        missing = [n for n in self.modalities if n not in inputs]
        if missing:
            raise MissingModalityError(
                f"missing modality '{missing[0]}' (model expects {self.names}, batch has {list(inputs)})"
            )
        sizes = {}
        for name, mod in self.modalities.items():
            sizes[name] = mod.validate(inputs[name], check_range=check_range)
            if name in self._norm_names and mod.kind == "image":
                stat = getattr(self, f"_mean_{name}").numel(), getattr(self, f"_std_{name}").numel()
                channels = inputs[name].shape[1]
                if any(k not in (1, channels) for k in stat):
                    raise ShapeMismatchError(
                        f"modality '{name}' has {channels} channel(s) but its normalisation has {max(stat)} values"
                    )
        if len(set(sizes.values())) > 1:
            raise ShapeMismatchError(f"batch sizes differ between modalities: {sizes}")
        images = {n: tuple(inputs[n].shape[2:]) for n, m in self.modalities.items() if m.kind == "image"}
        if self.input_style == "packed" and len(set(images.values())) > 1:
            raise ShapeMismatchError(f"packed input needs equal spatial sizes, got {images}")
        return next(iter(sizes.values()))

    def validate_labels(self, labels: torch.Tensor, logits: torch.Tensor, *, what: str = "labels") -> None:
        """Check labels against the task and the logits: shape, integer dtype, values in [0, C)."""
        if not isinstance(labels, torch.Tensor):
            raise LabelError(f"{what} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise LabelError(f"{what} must be integer class ids, got dtype {labels.dtype}")
        n, c = logits.shape[0], logits.shape[1]
        if self.task == "classification":
            want = (n,)
        else:
            want = (n, *logits.shape[2:])
        if tuple(labels.shape) != want:
            kind = "(N,)" if self.task == "classification" else "(N, H, W) matching the logits"
            raise LabelError(
                f"{what} for {self.task} must have shape {kind} = {want}, got {tuple(labels.shape)}"
            )
        valid = (labels >= 0) & (labels < c)
        if self.ignore_index is not None:
            valid |= labels == self.ignore_index
        if not bool(valid.all()):
            bad = labels[~valid]
            raise LabelError(
                f"{what} outside [0, {c}): found {sorted(set(bad.unique().tolist()))[:5]} "
                f"({int(bad.numel())} value(s))"
            )

    def check_logits(self, logits: torch.Tensor) -> torch.Tensor:
        want = 2 if self.task == "classification" else 4
        if logits.ndim != want:
            shape = "(N, C)" if want == 2 else "(N, C, H, W)"
            raise ShapeMismatchError(
                f"{self.task} model must return logits of shape {shape}, got {tuple(logits.shape)}"
            )
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ShapeMismatchError(
                f"model returned {logits.shape[1]} classes, FusionModel declares num_classes={self.num_classes}"
            )
        return logits

    # ------------------------------------------------------------------ forward
    def _prepared(self, inputs: Batch) -> dict[str, Any]:
        """Each tensor input as a fresh tensor in the compute dtype (so in-place ops inside the wrapped
        network, common in research code, never reach the caller's or a held context's tensors), then
        normalised."""
        out = dict(inputs)
        dtype = self.compute_dtype
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                out[name] = value.to(dtype=dtype if value.is_floating_point() else value.dtype, copy=True)
            elif isinstance(value, (list, tuple)):  # text: a model that edits its list must not reach the held one
                out[name] = [v if isinstance(v, str) else copy.deepcopy(v) for v in value]
        for name, defence in self.defences.items():
            if name in out:
                out[name] = defence(out[name])
        for name in self._norm_names:
            if name not in out:
                continue
            mean, std = getattr(self, f"_mean_{name}"), getattr(self, f"_std_{name}")
            out[name] = (out[name] - mean.to(dtype)) / std.to(dtype)
        return out

    # ------------------------------------------------------------------ towers
    @property
    def towers(self) -> tuple[str, ...]:
        """The modalities the wrapped network encodes separately (its ``towers``, with ``encode(name, value)``
        and ``fuse(features)``); empty when it does not expose them. A held modality's features can then be
        computed once and reused for every query of an attack on another modality."""
        net = self.model
        names = getattr(net, "towers", ())
        if not names or not callable(getattr(net, "encode", None)) or not callable(getattr(net, "fuse", None)):
            return ()
        if callable(self.input_style) or self.input_style != "named" or any(self.arg_names[n] != n for n in self.modalities):
            return ()
        return tuple(n for n in names if n in self.modalities)

    def encode(self, name: str, value: Any) -> torch.Tensor:
        """Features of one modality from the network's own tower, after this wrapper's preprocessing
        (dtype, defences, normalisation) exactly as ``forward`` applies it."""
        if name not in self.towers:
            raise ValueError(f"modality '{name}' has no separate tower in {type(self.model).__name__} (towers: {self.towers})")
        prepared = self._prepared({name: value})
        if self.amp_dtype is None:
            return self.model.encode(name, prepared[name])
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):  # as forward runs it
            return self.model.encode(name, prepared[name])

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits from per-tower features (see :meth:`encode`); equal to ``forward`` on the same inputs."""
        if self.amp_dtype is None:
            logits = unwrap_logits(self.model.fuse(dict(features)), self.output_key)
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
                logits = unwrap_logits(self.model.fuse(dict(features)), self.output_key)
            logits = logits.float()
        return self.check_logits(logits)

    def call_model(self, inputs: Batch) -> Any:
        """Call the wrapped network in its own convention; return its raw output."""
        prepared = self._prepared(inputs)
        if callable(self.input_style):
            return self.input_style(self.model, prepared)
        ordered = [prepared[n] for n in self.modalities]
        if self.input_style == "packed":
            return self.model(torch.cat(ordered, dim=1))
        if self.input_style == "positional":
            return self.model(*ordered)
        return self.model(**{self.arg_names[n]: prepared[n] for n in self.modalities})

    def forward(self, inputs: Batch | None = None, **named: Any) -> torch.Tensor:
        """Logits for a batch given as a mapping or as keyword arguments (no validation: hot path)."""
        batch = dict(inputs or {}, **named)
        if self.amp_dtype is None:
            logits = unwrap_logits(self.call_model(batch), self.output_key)
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
                logits = unwrap_logits(self.call_model(batch), self.output_key)
            logits = logits.float()
        return self.check_logits(logits)

    def use_amp(self, dtype: torch.dtype | None = torch.bfloat16) -> FusionModel:
        """Run the wrapped model under ``torch.autocast(dtype)`` (``None``: full precision again).
        Inputs, perturbations and the returned logits stay float32; only the model's own compute is
        reduced. bfloat16 by default: it keeps float32's exponent range, so the small input gradients
        of a per-pixel mean loss do not underflow as they can in float16 (which would need a
        gradient scaler that the toolkits do not apply)."""
        if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"use_amp takes torch.bfloat16, torch.float16 or None, got {dtype}")
        self.amp_dtype = dtype
        return self

    @torch.no_grad()
    def predict(self, inputs: Batch) -> torch.Tensor:
        """Class ids (``(N,)`` or ``(N, H, W)``) in eval mode; every module's mode is restored (a model in
        training with some modules kept in eval, e.g. frozen batch norm, stays so)."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            return predicted_classes(self(inputs))
        finally:
            for m, mode in modes:
                m.training = mode

    # ------------------------------------------------------------------ conveniences
    def surface(self, attacked: str | Sequence[str]):
        """The attack surface for ``attacked``: an ``nn.Module`` whose input is only those modalities."""
        from .surface import AttackSurface

        return AttackSurface(self, attacked)

    def extra_repr(self) -> str:
        style = self.input_style if isinstance(self.input_style, str) else "custom"
        return f"task={self.task}, modalities={self.names}, input_style={style}"
