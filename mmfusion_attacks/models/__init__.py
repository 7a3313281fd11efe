"""Models, registered by name: ``create_model("tiny-rgbt-segmenter", num_classes=9)`` returns a FusionModel."""

from ..registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def create_model(name: str, **kwargs):
    return MODELS.create(name, **kwargs)


from . import clip_like, contrastive  # noqa: E402,F401  (register "clip-tiny", "clip-like")
from .mfnet import MFNet  # noqa: E402  (each module registers its factories)
from .rtfnet import RTFNet  # noqa: E402
from .smp_fusion import TwoStreamUnet  # noqa: E402
from .tiny import TinyRGBTSegmenter  # noqa: E402
from .trimodal import TrimodalNet  # noqa: E402,F401  (registers "trimodal-fusion")
from .vl import EarlyFusionClassifier, LanguageClassifier, LateFusionClassifier, VisionClassifier  # noqa: E402
from .weights import WeightsError, WeightsMismatchError, load_weights  # noqa: E402

__all__ = ["MODELS", "register_model", "create_model", "MFNet", "RTFNet", "TinyRGBTSegmenter", "TwoStreamUnet",
           "WeightsError", "WeightsMismatchError", "load_weights",
           "VisionClassifier", "LanguageClassifier", "EarlyFusionClassifier", "LateFusionClassifier"]
