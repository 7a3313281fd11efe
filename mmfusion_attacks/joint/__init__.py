"""Joint multimodal attacks: several modalities attacked together by real toolkit attacks, and the worst
case over every subset of them (what no single toolkit offers for an arbitrary fusion model)."""

from .attack import ORCHESTRATIONS, JointAttack
from .plan import JointStep, ModalityAttack, build_steps, check_plan
from .subsets import SubsetReport, check_skip_broken, worst_case_over_subsets

__all__ = [
    "JointAttack",
    "JointStep",
    "ModalityAttack",
    "ORCHESTRATIONS",
    "SubsetReport",
    "build_steps",
    "check_plan",
    "check_skip_broken",
    "worst_case_over_subsets",
]
