"""The medical vision-language robustness study (chest X-ray + report): vision-only, language-only,
early- and late-fusion models under FGSM on the images, WordNet synonym substitution and word deletion
in the report, each alone, combined and all at once, plus TextAttack recipes (a thin preset over
mmfusion_attacks.harness).

    python benchmarks/vl_fusion.py               # embedded SYNTHETIC default, CPU
    python benchmarks/vl_fusion.py --data DIR    # a real Indiana University chest X-ray folder

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.vl import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
