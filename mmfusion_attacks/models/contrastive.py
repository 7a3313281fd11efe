"""Contrastive image-text models (any ``transformers.CLIPModel``, or your own dual encoder) as FusionModels.

A contrastive model scores an image against texts: ``logit_scale * cos(image_embedding, text_embedding)``.
Two tasks are wrapped so that ART / torchattacks attack the image and TextAttack attacks the text,
each with the other modality held bit-identical, exactly as for any other fusion model:

**Zero-shot classification** (:func:`zero_shot_model`, :func:`from_clip`). The class prompts are per
*class*, but an attack perturbs per *example*. Design: the text modality (``"prompts"``) holds, for every
example, the whole prompt set of the classifier, one prompt per class joined by :data:`PROMPT_SEPARATOR`
(``"a photo of a t-shirt. | a photo of a trouser. | ..."``; :meth:`ZeroShotClassifier.batch` builds it).
The network splits each row back into its ``K`` prompts, encodes them (tokenisation inside; identical
prompts of a batch encoded once) and returns ``(N, K)`` logits ``= logit_scale * cos(image_n, prompt_{n,k})``.
Hence

- an image attack (``fusion.surface("image")``, ``to_art`` / ``to_torchattacks``) sees only the image and
  every query meets the example's prompt set, unchanged;
- a TextAttack recipe through ``FusionModelWrapper(fusion)`` edits the prompt set of one example (any word
  of any class's prompt: a class name, the template) while that example's image is held; the separator
  is no word, so no word-level transformation can merge or split prompts (a row whose prompt count is
  not ``K`` is a :class:`TextInputError` naming the row);
- the towers protocol (``towers``, ``encode``, ``fuse``) lets the text adapter encode each held image once.

Rejected alternatives: the example's own caption with the prompts inside the wrapper (then the prompts
cannot be attacked), the true class's prompt alone (the network does not know the label when it is
queried), a template the network expands (an attack could then only touch the template's few words).

**Image-text retrieval** (:func:`caption_matching_model`, :func:`retrieval_recall`). A gallery of
``G`` (image, caption) pairs is held by :class:`CaptionMatcher`; an example is one pair, its label its
gallery index, and its logits rank every gallery caption for its image, with its own column scoring the
example's *current* caption. So top-k accuracy of the logits is recall@k of the right caption, an image
attack perturbs the image (the caption held) and a text attack perturbs the caption (the image held).
:func:`retrieval_recall` computes recall@k directly, before or after an attack.

**Errors before work**: an image of another size than the model's (a ``CLIPModel``'s
``vision_config.image_size``) is a ``ShapeMismatchError`` naming the modality and the expected size (the
image modality declares its shape, so ``run_attack`` refuses it while validating); a prompt or caption
longer than the text context (``max_position_embeddings``) is a :class:`TextInputError` naming the row
and the prompt: text is never truncated silently. ``count_tokens`` / ``max_text_tokens`` expose the same
limit, so the TextAttack adapter refuses such rows before any query.

Contrastive models here are "CLIP-like" or a user's ``CLIPModel``; see :mod:`.clip_like` for the
project's offline CLIP-like model and ``docs/contrastive.md``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, RowAlignmentError, ShapeMismatchError, TextInputError
from ..fusion import FusionModel
from ..modality import Modality
from . import register_model

__all__ = [
    "PROMPT_SEPARATOR",
    "DEFAULT_TEMPLATE",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "DualEncoder",
    "CLIPDualEncoder",
    "ZeroShotClassifier",
    "CaptionMatcher",
    "dual_encoder",
    "clip_encoder",
    "zero_shot_model",
    "from_clip",
    "caption_matching_model",
    "retrieval_recall",
    "tiny_clip",
    "byte_clip_tokenizer",
    "clip_tiny",
]

#: joins one example's class prompts in the text modality (a symbol: never part of a TextAttack word)
PROMPT_SEPARATOR = " | "
DEFAULT_TEMPLATE = "a photo of a {}."
#: the image normalisation of OpenAI's CLIP checkpoints (``CLIPImageProcessor`` defaults)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------------------------------- encoders
class DualEncoder(nn.Module):
    """An image tower and a text tower projected into one space and scored by a temperature (CLIP's shape).

    Args:
        image_tower: ``(N, C, H, W)`` images (after ``image_mean`` / ``image_std``) -> ``(N, Di)``.
        text_tower: a list of ``N`` strings -> ``(N, Dt)``; it tokenises (e.g. :class:`.vl.TextTower`).
            Its ``count_tokens`` / ``max_text_tokens``, when it has them, give the text limit.
        image_projection, text_projection: ``Di -> D`` and ``Dt -> D`` (``None``: identity).
        temperature: ``logits = cos / temperature``; stored as CLIP's ``logit_scale = log(1 / temperature)``
            (``learn_temperature``: a trainable parameter), its exponential capped at 100 like CLIP's.
        image_mean, image_std: per-channel normalisation applied inside, so attacks see images in [0, 1].
        image_size: ``(H, W)`` (or one int) the image tower needs; ``None``: any.
        channels: image channels the tower takes (declared on the FusionModel's image modality).
        max_text_tokens: the text context, when the text tower does not declare it.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        image_projection: nn.Module | None = None,
        text_projection: nn.Module | None = None,
        *,
        temperature: float = 0.07,
        learn_temperature: bool = False,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        image_size: int | tuple[int, int] | None = None,
        channels: int | None = 3,
        max_text_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_projection = image_projection if image_projection is not None else nn.Identity()
        self.text_projection = text_projection if text_projection is not None else nn.Identity()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learn_temperature)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else (tuple(image_size) if image_size else None)
        self.channels = channels
        self._max_text_tokens = max_text_tokens
        #: where the text context comes from (named in errors)
        self.context_name = "max_text_tokens"
        for name, value in (("image_mean", image_mean), ("image_std", image_std)):
            t = None if value is None else torch.as_tensor(value, dtype=torch.float32).reshape(1, -1, 1, 1)
            self.register_buffer(name, t, persistent=False)
        if self.image_std is not None and bool((self.image_std == 0).any()):
            raise ValueError("image_std must be non-zero")

    # ------------------------------------------------------------------ text limits
    @property
    def max_text_tokens(self) -> int | None:
        """The longest text (tokens, special tokens included) the text tower reads."""
        if self._max_text_tokens is not None:
            return self._max_text_tokens
        return getattr(self.text_tower, "max_text_tokens", None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before any truncation."""
        counter = getattr(self.text_tower, "count_tokens", None)
        if not callable(counter):
            raise TypeError(f"the text tower {type(self.text_tower).__name__} has no count_tokens")
        return list(counter(list(texts)))

    def check_texts(self, texts: Sequence[str], describe: Callable[[int], str]) -> None:
        """Raise :class:`TextInputError` for a text longer than the context; ``describe(i)`` names text ``i``."""
        limit = self.max_text_tokens
        countable = type(self).count_tokens is not DualEncoder.count_tokens or callable(getattr(self.text_tower, "count_tokens", None))
        if limit is None or not countable or not texts:
            return
        for i, c in enumerate(self.count_tokens(texts)):
            if c > limit:
                raise TextInputError(
                    f"{describe(i)} has {c} tokens, more than the model's text context of {limit} ({self.context_name}): "
                    "it would be truncated. Shorten it"
                )

    # ------------------------------------------------------------------ embeddings
    def check_images(self, images: torch.Tensor, modality: str = "image") -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ShapeMismatchError(f"modality '{modality}': expected images (N, C, H, W), got {tuple(getattr(images, 'shape', ()))}")
        if self.channels is not None and images.shape[1] != self.channels:
            raise ShapeMismatchError(f"modality '{modality}': the image tower takes {self.channels} channel(s), got {images.shape[1]}")
        if self.image_size is not None and tuple(images.shape[2:]) != self.image_size:
            raise ShapeMismatchError(
                f"modality '{modality}': images of {tuple(images.shape[2:])} pixels, the model takes "
                f"{self.image_size[0]}x{self.image_size[1]} (its vision config's image_size): resize them first"
            )

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``(N, D)`` of images in [0, 1]."""
        if self.image_mean is not None:
            images = images - self.image_mean.to(images.dtype)
        if self.image_std is not None:
            images = images / self.image_std.to(images.dtype)
        return self.image_projection(self.image_tower(images))

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings ``(N, D)``."""
        return self.text_projection(self.text_tower(list(texts)))

    def image_features(self, images: torch.Tensor, modality: str = "image") -> torch.Tensor:
        """L2-normalised image embeddings ``(N, D)``."""
        self.check_images(images, modality)
        return F.normalize(self.embed_image(images), dim=-1)

    def text_features(self, texts: Sequence[str], describe: Callable[[int], str] | None = None) -> torch.Tensor:
        """L2-normalised text embeddings ``(N, D)``; texts longer than the context raise."""
        texts = list(texts)
        self.check_texts(texts, describe or (lambda i: f"text {i} ({texts[i][:40]!r})"))
        return F.normalize(self.embed_text(texts), dim=-1)

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, capped at 100 as CLIP does."""
        return self.logit_scale.exp().clamp(max=100.0)


class CLIPDualEncoder(DualEncoder):
    """A ``transformers.CLIPModel`` (or any model with ``get_image_features`` / ``get_text_features`` and
    ``logit_scale``) and its tokeniser as a :class:`DualEncoder`: the image size and the text context come
    from its config; images are normalised inside (``image_mean`` / ``image_std``, OpenAI's by default)."""

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer: Any,
        *,
        image_mean: Sequence[float] | None = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] | None = OPENAI_CLIP_STD,
    ) -> None:
        if not all(callable(getattr(clip_model, a, None)) for a in ("get_image_features", "get_text_features")):
            raise TypeError(f"{type(clip_model).__name__} has no get_image_features / get_text_features: pass a transformers.CLIPModel")
        config = clip_model.config
        vision, text = config.vision_config, config.text_config
        super().__init__(nn.Identity(), nn.Identity(), image_mean=image_mean, image_std=image_std,
                         image_size=int(vision.image_size), channels=int(getattr(vision, "num_channels", 3)),
                         max_text_tokens=int(text.max_position_embeddings))
        del self.logit_scale  # the model's own
        self.clip = clip_model
        self.tokenizer = tokenizer
        self.context_name = "text_config.max_position_embeddings"

    @property
    def logit_scale(self) -> torch.Tensor:  # type: ignore[override]
        return self.clip.logit_scale

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.image_mean is not None:
            images = (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)
        return _features(self.clip.get_image_features(pixel_values=images))

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        return _features(self.clip.get_text_features(**enc))


def _features(out: Any) -> torch.Tensor:
    """Embeddings from ``get_*_features`` (a tensor, or an output object in newer transformers)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot read embeddings from {type(out).__name__}")


# ---------------------------------------------------------------------------------------------- views
def _describe_row(modality: str, row: int, what: str = "", text: str = "") -> str:
    where = f"modality '{modality}': row {row}"
    return f"{where}, {what} {text[:60]!r}" if what else where


class ZeroShotClassifier(nn.Module):
    """Zero-shot classification by a :class:`DualEncoder` over ``K`` class prompts held in the text modality.

    ``forward(image=(N, C, H, W), prompts=[N joined prompt sets]) -> (N, K)`` logits; see the module
    docstring for why each example's text holds the whole prompt set. ``class_names`` with ``template``
    (``"a photo of a {}."``) make the prompts, or give ``prompts`` (one per class) yourself.
    """

    def __init__(
        self,
        encoder: DualEncoder,
        class_names: Sequence[str],
        *,
        template: str = DEFAULT_TEMPLATE,
        prompts: Sequence[str] | None = None,
        image: str = "image",
        text: str = "prompts",
    ) -> None:
        super().__init__()
        if not isinstance(encoder, DualEncoder):
            raise TypeError(f"encoder must be a DualEncoder (see dual_encoder / clip_encoder), got {type(encoder).__name__}")
        names = [str(c) for c in class_names]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"zero-shot classification needs at least two distinct class names, got {names}")
        if prompts is None:
            if "{}" not in template:
                raise ValueError(f"template must hold '{{}}' where the class name goes, got {template!r}")
            prompts = [template.format(c) for c in names]
        prompts = [str(p).strip() for p in prompts]
        if len(prompts) != len(names):
            raise ValueError(f"{len(prompts)} prompts for {len(names)} classes: give one prompt per class")
        bad = [p for p in prompts if not p or PROMPT_SEPARATOR.strip() in p]
        if bad:
            raise ValueError(f"prompts must be non-empty and must not contain {PROMPT_SEPARATOR.strip()!r} (it separates them): {bad[:3]}")
        self.encoder = encoder
        self.class_names = tuple(names)
        self.prompts = tuple(prompts)
        self.image_name, self.text_name = image, text
        self.towers = (image, text)
        # a class prompt longer than the context is refused when the classifier is built
        encoder.check_texts(self.prompts, lambda k: f"the prompt of class {names[k]!r} ({self.prompts[k]!r})")

    @property
    def prompt_text(self) -> str:
        """One example's text: the class prompts joined by :data:`PROMPT_SEPARATOR`."""
        return PROMPT_SEPARATOR.join(self.prompts)

    @property
    def num_classes(self) -> int:
        return len(self.prompts)

    def batch(self, images: torch.Tensor) -> dict[str, Any]:
        """A named batch for ``images``: each example's text is the clean prompt set."""
        return {self.image_name: images, self.text_name: [self.prompt_text] * int(images.shape[0])}

    # ------------------------------------------------------------------ text
    def split(self, texts: Sequence[str]) -> list[list[str]]:
        """Each row's ``K`` prompts; a row with another number of prompts is a :class:`TextInputError`."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TextInputError(f"modality '{self.text_name}': expected a list of prompt sets, got {type(texts).__name__}")
        out = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TextInputError(f"modality '{self.text_name}': row {i} is {type(t).__name__}, expected str")
            parts = [p.strip() for p in t.split(PROMPT_SEPARATOR.strip())]
            if len(parts) != self.num_classes:
                raise TextInputError(
                    f"modality '{self.text_name}': row {i} holds {len(parts)} prompt(s), the classifier has "
                    f"{self.num_classes} classes {list(self.class_names)}: each row is one prompt per class joined by "
                    f"{PROMPT_SEPARATOR!r} (use ZeroShotClassifier.batch(images) or .prompt_text)"
                )
            out.append(parts)
        return out

    @property
    def max_text_tokens(self) -> int | None:
        """The text context of one prompt."""
        return self.encoder.max_text_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Per row, the tokens of its longest prompt (the TextAttack adapter compares it with the context)."""
        rows = self.split(texts)
        flat = [p for r in rows for p in r]
        counts = iter(self.encoder.count_tokens(flat)) if flat else iter(())
        return [max(next(counts) for _ in r) for r in rows]

    def check_prompt_lengths(self, texts: Sequence[str]) -> list[list[str]]:
        rows = self.split(texts)
        flat = [(i, k, p) for i, r in enumerate(rows) for k, p in enumerate(r)]
        self.encoder.check_texts(
            [p for _, _, p in flat],
            lambda j: _describe_row(self.text_name, flat[j][0], f"the prompt of class {self.class_names[flat[j][1]]!r}", flat[j][2]),
        )
        return rows

    # ------------------------------------------------------------------ tower protocol
    def encode(self, name: str, value: Any) -> torch.Tensor:
        """``image``: ``(N, D)`` normalised embeddings; ``prompts``: ``(N, K, D)`` (each distinct prompt once)."""
        if name == self.image_name:
            return self.encoder.image_features(value, name)
        if name == self.text_name:
            rows = self.check_prompt_lengths(value)
            unique = list(dict.fromkeys(p for r in rows for p in r))  # a batch of one prompt set: K encodings, not N * K
            emb = F.normalize(self.encoder.embed_text(unique), dim=-1)
            index = {p: j for j, p in enumerate(unique)}
            return emb[torch.tensor([[index[p] for p in r] for r in rows], dtype=torch.long, device=emb.device)]
        raise KeyError(f"unknown tower {name!r}; this network's towers are {self.towers}")

    def fuse(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image, prompts = features[self.image_name], features[self.text_name]
        if image.shape[0] != prompts.shape[0]:
            raise ShapeMismatchError(f"{image.shape[0]} image(s) but {prompts.shape[0]} prompt set(s)")
        return self.encoder.scale().to(image.dtype) * torch.einsum("nd,nkd->nk", image, prompts.to(image.dtype))

    def forward(self, **inputs: Any) -> torch.Tensor:
        unknown = [n for n in inputs if n not in self.towers]
        if unknown or len(inputs) != 2:
            raise TypeError(f"ZeroShotClassifier takes {self.towers}; got {tuple(inputs)}")
        prompts = self.encode(self.text_name, inputs[self.text_name])  # text checks first: before the image tower runs
        return self.fuse({self.image_name: self.encode(self.image_name, inputs[self.image_name]), self.text_name: prompts})


class CaptionMatcher(nn.Module):
    """Image-to-caption retrieval over a held gallery of ``G`` (image, caption) pairs: ``(N, G)`` logits.

    An example is a gallery pair (label: its index). Its logits score its image against every gallery
    caption, its own column against the example's *current* caption: the pair is found by its image when
    that is a gallery image bit for bit (a text attack holds the image), else by its caption (an image
    attack holds the caption); a row matching neither is a :class:`RowAlignmentError`. Top-k accuracy is
    then recall@k of the right caption. Gallery caption embeddings are cached and recomputed when any
    parameter's version or a module's mode changes. One caption per image: a gallery image under several
    captions (COCO style) is refused, since a text attack's row could not tell which pair it is.
    """

    def __init__(self, encoder: DualEncoder, images: torch.Tensor, captions: Sequence[str], *, image: str = "image", text: str = "caption") -> None:
        super().__init__()
        if not isinstance(encoder, DualEncoder):
            raise TypeError(f"encoder must be a DualEncoder, got {type(encoder).__name__}")
        captions = [str(c) for c in captions]
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != len(captions) or len(captions) < 2:
            raise ShapeMismatchError(
                f"the gallery needs images (G, C, H, W) and G >= 2 captions, got {tuple(getattr(images, 'shape', ()))} and {len(captions)}"
            )
        encoder.check_images(images, image)
        encoder.check_texts(captions, lambda i: f"modality '{text}': gallery caption {i} ({captions[i][:60]!r})")
        first: dict[bytes, int] = {}
        for j, img in enumerate(images.detach().cpu().contiguous()):
            k = first.setdefault(img.numpy().tobytes(), j)
            if k != j and captions[k] != captions[j]:
                raise InputError(
                    f"modality '{image}': gallery images {k} and {j} are identical, with different captions: a row is "
                    "found in the gallery by its image under a text attack, which cannot tell these pairs apart (each "
                    "row's own score would be written into both columns). Keep one caption per image"
                )
        self.encoder = encoder
        self.captions = tuple(captions)
        self.register_buffer("gallery", images.detach().clone().float(), persistent=False)
        self.image_name, self.text_name = image, text
        self.towers = ()  # the own column needs the raw image: no separate towers
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @property
    def max_text_tokens(self) -> int | None:
        return self.encoder.max_text_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def _stamp(self) -> tuple:
        return tuple((id(t), t._version) for t in [*self.encoder.parameters(), *self.encoder.buffers()]) + tuple(
            m.training for m in self.encoder.modules()
        )

    def gallery_text_features(self) -> torch.Tensor:
        """The gallery captions' normalised embeddings (constants: no gradient flows into them)."""
        stamp = self._stamp()
        if self._cache is None or self._cache[0] != stamp:
            with torch.no_grad():
                feats = F.normalize(self.encoder.embed_text(self.captions), dim=-1)
            self._cache = (stamp, feats)
        return self._cache[1]

    def own_columns(self, images: torch.Tensor, captions: Sequence[str]) -> list[list[int]]:
        """Per row, the gallery columns that are its pair (by image bit-equality, else by caption)."""
        gallery = self.gallery.to(images.dtype)
        out = []
        for i, (img, cap) in enumerate(zip(images, captions)):
            same = (gallery == img.unsqueeze(0)).flatten(1).all(1).nonzero().flatten().tolist() if img.shape == gallery.shape[1:] else []
            if not same:
                same = [j for j, c in enumerate(self.captions) if c == cap]
            if not same:
                raise RowAlignmentError(
                    f"modality '{self.text_name}': row {i}: neither its image nor its caption ({cap[:60]!r}) is in the "
                    "gallery: CaptionMatcher scores gallery pairs with at most one modality changed (an image attack holds "
                    "the caption, a text attack the image)"
                )
            out.append(same)
        return out

    def forward(self, **inputs: Any) -> torch.Tensor:
        if set(inputs) != {self.image_name, self.text_name}:
            raise TypeError(f"CaptionMatcher takes ({self.image_name!r}, {self.text_name!r}); got {tuple(inputs)}")
        images, captions = inputs[self.image_name], list(inputs[self.text_name])
        self.encoder.check_texts(captions, lambda i: _describe_row(self.text_name, i, "caption", captions[i]))
        own = self.own_columns(images, captions)
        img = self.encoder.image_features(images, self.image_name)
        sims = img @ self.gallery_text_features().to(img.dtype).T  # (N, G)
        rows = [i for i, cols in enumerate(own) if any(self.captions[j] != captions[i] for j in cols)]
        if rows:
            cap = F.normalize(self.encoder.embed_text([captions[i] for i in rows]), dim=-1).to(img.dtype)
            own_sim = (img[rows] * cap).sum(-1)
            sims = sims.clone()
            for r, i in enumerate(rows):
                sims[i, own[i]] = own_sim[r]
        return self.encoder.scale().to(img.dtype) * sims


# ---------------------------------------------------------------------------------------------- builders
def dual_encoder(
    image_tower: nn.Module,
    text_tower: nn.Module,
    image_projection: nn.Module | None = None,
    text_projection: nn.Module | None = None,
    temperature: float = 0.07,
    **kwargs: Any,
) -> DualEncoder:
    """Your own dual encoder (image tower, text tower taking a list of strings, projections, temperature)."""
    return DualEncoder(image_tower, text_tower, image_projection, text_projection, temperature=temperature, **kwargs)


def clip_encoder(clip_model: nn.Module, tokenizer: Any, **kwargs: Any) -> CLIPDualEncoder:
    """A ``transformers.CLIPModel`` and its tokeniser (or processor: its ``.tokenizer`` is used) as a :class:`DualEncoder`."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer (callable), got {type(tokenizer).__name__}")
    return CLIPDualEncoder(clip_model, tokenizer, **kwargs)


def _image_modality(encoder: DualEncoder, name: str, description: str) -> Modality:
    shape = (encoder.channels, *encoder.image_size) if encoder.channels and encoder.image_size else None
    return Modality(name, kind="image", channels=encoder.channels, shape=shape, valid_range=(0.0, 1.0), description=description)


def zero_shot_model(
    encoder: DualEncoder,
    class_names: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    prompts: Sequence[str] | None = None,
    image: str = "image",
    text: str = "prompts",
    **fusion_kwargs: Any,
) -> FusionModel:
    """Zero-shot classification by ``encoder`` as a FusionModel with modalities ``image`` and ``prompts`` (text).

    Build inputs with ``fusion.model.batch(images)``. The image modality declares the encoder's channels
    and size, so ``run_attack`` refuses other sizes before any work.
    """
    net = ZeroShotClassifier(encoder, class_names, template=template, prompts=prompts, image=image, text=text)
    mods = [
        _image_modality(encoder, image, "the image a contrastive model classifies"),
        Modality(text, kind="text", valid_range=None, description=f"the class prompts, joined by {PROMPT_SEPARATOR!r}"),
    ]
    return FusionModel(net, mods, task="classification", num_classes=net.num_classes, **fusion_kwargs).eval()


def from_clip(
    clip_model: nn.Module,
    tokenizer: Any,
    class_names: Sequence[str],
    *,
    template: str = DEFAULT_TEMPLATE,
    prompts: Sequence[str] | None = None,
    image_mean: Sequence[float] | None = OPENAI_CLIP_MEAN,
    image_std: Sequence[float] | None = OPENAI_CLIP_STD,
    **kwargs: Any,
) -> FusionModel:
    """Zero-shot classification FusionModel of any ``transformers.CLIPModel`` (images in [0, 1] of its
    ``vision_config.image_size``, normalised inside; prompts tokenised inside)."""
    encoder = clip_encoder(clip_model, tokenizer, image_mean=image_mean, image_std=image_std)
    return zero_shot_model(encoder, class_names, template=template, prompts=prompts, **kwargs)


def caption_matching_model(
    encoder: DualEncoder, images: torch.Tensor, captions: Sequence[str], *, image: str = "image", text: str = "caption", **fusion_kwargs: Any
) -> FusionModel:
    """Retrieval of the right caption among a gallery of (image, caption) pairs, as a FusionModel; the
    batch is ``{"image": images, "caption": captions}`` with labels ``arange(G)`` (see :class:`CaptionMatcher`)."""
    net = CaptionMatcher(encoder, images, captions, image=image, text=text)
    mods = [_image_modality(encoder, image, "the query image"), Modality(text, kind="text", valid_range=None, description="the image's caption")]
    return FusionModel(net, mods, task="classification", num_classes=len(net.captions), **fusion_kwargs).eval()


def _encoder_of(model: Any) -> DualEncoder:
    net = model.model if isinstance(model, FusionModel) else model
    if isinstance(net, DualEncoder):
        return net
    encoder = getattr(net, "encoder", None)
    if isinstance(encoder, DualEncoder):
        return encoder
    raise TypeError(f"expected a DualEncoder or a FusionModel around a contrastive view, got {type(net).__name__}")


@torch.no_grad()
def retrieval_recall(
    model: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    k: int | Sequence[int] = (1, 5),
    *,
    reference: Sequence[str] | None = None,
    direction: str = "image-to-text",
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@k of the right caption: for each image ``i``, whether ``captions[i]`` is among the ``k``
    best-scored captions (ties count in its favour, so identical captions do not compete).

    ``reference``: the clean captions when ``captions`` were attacked: image ``i`` then ranks
    ``captions[i]`` against ``reference[j]`` for ``j != i`` (as :class:`CaptionMatcher` scores it).
    ``direction="text-to-image"``: for each caption, whether its image is among the ``k`` best images.
    ``model``: a :class:`DualEncoder` or a FusionModel around one of this module's views.
    Returns ``{"R@1": ..., "R@5": ...}``.
    """
    encoder = _encoder_of(model)
    ks = (k,) if isinstance(k, int) else tuple(k)
    captions = list(captions)
    n = len(captions)
    if not isinstance(images, torch.Tensor) or images.shape[0] != n or n == 0:
        raise ShapeMismatchError(f"retrieval needs as many images as captions (> 0), got {tuple(getattr(images, 'shape', ()))} and {n}")
    if any(not (isinstance(v, int) and v >= 1) for v in ks):
        raise ValueError(f"k must be positive ints, got {ks}")
    if direction not in ("image-to-text", "text-to-image"):
        raise ValueError(f"direction must be 'image-to-text' or 'text-to-image', got {direction!r}")
    if reference is not None and len(reference) != n:
        raise ShapeMismatchError(f"reference has {len(reference)} captions for {n} images")
    was = encoder.training
    encoder.eval()
    try:
        device = next(iter(encoder.parameters())).device
        img = torch.cat([encoder.image_features(images[s : s + batch_size].to(device)) for s in range(0, n, batch_size)])
        txt = torch.cat([encoder.text_features(captions[s : s + batch_size]) for s in range(0, n, batch_size)])
        if reference is None:
            sims = img @ txt.T
        else:
            ref = torch.cat([encoder.text_features(list(reference[s : s + batch_size])) for s in range(0, n, batch_size)])
            sims = img @ ref.T
            sims[torch.arange(n), torch.arange(n)] = (img * txt).sum(-1)
    finally:
        encoder.train(was)
    if direction == "text-to-image":
        sims = sims.T
    right = sims.diagonal().unsqueeze(1)
    rank = (sims > right).sum(1)
    return {f"R@{v}": float((rank < v).float().mean()) for v in ks}


# ---------------------------------------------------------------------------------------------- tiny CLIP
def byte_clip_tokenizer():
    """A ``CLIPTokenizer`` over single bytes (no merges): a real CLIP tokeniser for random tiny CLIPs,
    built offline (its vocabulary is written to a temporary folder and read back)."""
    from ..extras import require

    CLIPTokenizer = require("transformers", feature="the tiny CLIP model (clip-tiny)").CLIPTokenizer
    bytes_to_unicode = require("transformers.models.clip.tokenization_clip", feature="the tiny CLIP model (clip-tiny)").bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    vocab = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({t: i for i, t in enumerate(vocab)}, f)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
        return CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))


def tiny_clip(image_size: int = 32, context: int = 48, *, hidden: int = 32, layers: int = 2, projection_dim: int = 16, seed: int = 0):
    """A randomly initialised tiny ``transformers.CLIPModel`` and its byte tokeniser: ``(model, tokenizer)``."""
    from ..extras import require

    transformers = require("transformers", feature="the tiny CLIP model (clip-tiny)")
    CLIPConfig, CLIPModel = transformers.CLIPConfig, transformers.CLIPModel
    tok = byte_clip_tokenizer()
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=context, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **common),
        vision_config=dict(image_size=image_size, patch_size=max(1, image_size // 4), **common),
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), tok


@register_model("clip-tiny")
def clip_tiny(
    class_names: Sequence[str] = ("t-shirt", "trouser", "sneaker", "bag"),
    image_size: int = 32,
    context: int = 48,
    template: str = DEFAULT_TEMPLATE,
    seed: int = 0,
    **kwargs: Any,
) -> FusionModel:
    """Zero-shot FusionModel of a random tiny ``CLIPModel`` (for tests: offline, untrained)."""
    model, tok = tiny_clip(image_size, context, seed=seed)
    return from_clip(model, tok, class_names, template=template, **kwargs)
