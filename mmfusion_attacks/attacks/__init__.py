"""Only what the toolkits lack: segmentation-specific PGD losses and per-pixel least-likely targets.

SegPGD and CosPGD subclass ``torchattacks.attack.Attack`` (same interface: ``atk(images, labels)``,
``set_mode_targeted_by_label``), so they run on an attack surface like any torchattacks attack.
"""

from .cospgd import CosPGD
from .least_likely import least_likely_targets
from .pixel_pgd import PixelLossPGD
from .segpgd import SegPGD

__all__ = ["SegPGD", "CosPGD", "PixelLossPGD", "least_likely_targets"]
