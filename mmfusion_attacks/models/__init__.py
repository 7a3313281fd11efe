"""Models, registered by name: ``create_model("tiny-rgbt-segmenter", num_classes=9)`` returns a FusionModel."""

from ..registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def create_model(name: str, **kwargs):
    return MODELS.create(name, **kwargs)


from .tiny import TinyRGBTSegmenter  # noqa: E402  (registers itself)

__all__ = ["MODELS", "register_model", "create_model", "TinyRGBTSegmenter"]
