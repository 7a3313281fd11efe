"""Datasets, registered by name: ``create_dataset("synthetic-rgbt", split="test")``."""

from ..registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, **kwargs):
    return DATASETS.create(name, **kwargs)


from .fashion_mnist import FashionMNIST  # noqa: E402,F401  (registers "fashion-mnist")
from .iu_xray import IU_SPLITS, VL_CLASSES, IUXray  # noqa: E402
from .mf_dataset import MF_SPLITS, MFDataset  # noqa: E402
from .synthetic_rgbt import MF_CLASSES, SyntheticRGBT  # noqa: E402  (registers itself)
from .synthetic_rgbt_cls import SCENE_CLASSES, SyntheticRGBTScenes  # noqa: E402
from .synthetic_trimodal import SyntheticTrimodal  # noqa: E402,F401  (registers "synthetic-trimodal")
from .synthetic_vl import SyntheticXrayReports  # noqa: E402

__all__ = ["DATASETS", "register_dataset", "create_dataset", "SyntheticRGBT", "SyntheticRGBTScenes", "SCENE_CLASSES", "MFDataset", "MF_CLASSES", "MF_SPLITS", "IUXray", "IU_SPLITS", "VL_CLASSES", "SyntheticXrayReports"]
