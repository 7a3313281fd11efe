"""Defences under per-modality attacks: adversarial training on one modality vs both (through ART's
trainers on the fusion estimators), and a preprocessing defence on one modality attacked plainly,
with BPDA and with EOT (a thin preset over mmfusion_attacks.harness).

    python benchmarks/defences.py            # embedded SYNTHETIC default, about 5 minutes on 2 CPU cores

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.defences import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
