"""The medical vision-language robustness study (chest X-ray + report): vision-only, language-only,
early- and late-fusion models under FGSM on the images, WordNet synonym substitution and word deletion
in the report, each alone, combined and all at once, plus TextAttack recipes (a thin preset over
mmfusion_attacks.harness: the options become a YAML spec, run by the harness's engine into --out,
resumable, with report.html / report.md / results.csv / summary.json and the study's table).

    python benchmarks/vl_fusion.py               # embedded SYNTHETIC default, CPU
    python benchmarks/vl_fusion.py --data DIR    # a real Indiana University chest X-ray folder
    python benchmarks/vl_fusion.py --speed       # also time the held-image feature cache (after the table)

    python benchmarks/vl_fusion.py --print-spec > vl.yaml   # the study as a spec; nothing is run
    mmfusion-attacks run vl.yaml --out runs/vl              # reproduces this script's table exactly

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.vl import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
