"""Joint attacks and the worst case over modality subsets: which subset of modalities breaks each
model (image + report models of the chest X-ray study, an RGB-T classifier), with supersets never
reported weaker than their subsets (a thin preset over mmfusion_attacks.harness).

    python benchmarks/joint.py        # embedded SYNTHETIC defaults, CPU

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.joint import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
