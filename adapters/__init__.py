"""Toolkit adapters, importable as ``mmfusion_attacks.adapters.art`` and ``...adapters.torchattacks``.

Each module imports its toolkit; import only the one you use. Importing one registers its driver
with :func:`mmfusion_attacks.run_attack` (which also imports them lazily on first use).
"""

__all__ = ["art", "torchattacks"]
