"""mmfusion-attacks: attack multimodal fusion models one modality at a time, with the toolkits you know.

    fusion = FusionModel(net, ["rgb", "ir"], input_style="packed", task="segmentation")
    atk = torchattacks.PGD(fusion.surface("ir"), eps=8/255)     # only thermal moves
    result = run_attack(atk, {"rgb": rgb, "ir": ir}, labels)
"""

from .errors import (
    EmptySubsetError,
    InputError,
    InvariantViolationError,
    LabelError,
    MissingModalityError,
    MMFusionError,
    ModelOutputError,
    NonFiniteInputError,
    NonFiniteOutputError,
    NoPerturbationWarning,
    RowAlignmentError,
    ShapeMismatchError,
    UnknownModalityError,
    UnsupportedAttackError,
    ValueRangeError,
)
from .fusion import FusionModel, unwrap_logits
from .modality import Modality, ThreatModel, get_modality, list_modalities, register_modality
from .runner import (
    AdversarialBatch,
    AttackDriver,
    Budget,
    CleanLogits,
    clean_forward,
    find_driver,
    register_driver,
    run_attack,
)
from .surface import AttackSurface

__version__ = "0.1.0"

__all__ = [
    "AdversarialBatch",
    "AttackDriver",
    "AttackSurface",
    "Budget",
    "CleanLogits",
    "EmptySubsetError",
    "FusionModel",
    "InputError",
    "InvariantViolationError",
    "LabelError",
    "MMFusionError",
    "MissingModalityError",
    "ModelOutputError",
    "Modality",
    "NonFiniteInputError",
    "NonFiniteOutputError",
    "NoPerturbationWarning",
    "RowAlignmentError",
    "ShapeMismatchError",
    "ThreatModel",
    "UnknownModalityError",
    "UnsupportedAttackError",
    "ValueRangeError",
    "clean_forward",
    "find_driver",
    "get_modality",
    "list_modalities",
    "register_driver",
    "register_modality",
    "run_attack",
    "unwrap_logits",
    "__version__",
]
