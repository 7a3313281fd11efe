"""Defences under per-modality attacks: adversarial training on one modality vs both (through ART's
trainers on the fusion estimators), and a preprocessing defence on one modality attacked plainly,
with BPDA and with EOT (a thin preset: a spec run by mmfusion_attacks.harness).

    python benchmarks/defences.py                          # embedded SYNTHETIC default, about 5 minutes on 2 CPU cores
    python benchmarks/defences.py --print-spec > d.yaml    # the spec it runs, as YAML
    mmfusion-attacks run d.yaml --out runs/d               # the same experiments and the same table

Re-running with the same --out resumes. Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.defences import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
