"""The CLIP-like contrastive study: zero-shot classification under white-, grey- and black-box attacks
on the image, on the class prompts, and on both (a thin preset: a spec run by mmfusion_attacks.harness).

    python benchmarks/contrastive.py                         # the CLIP-like model on Fashion-MNIST (SYNTHETIC stand-in without it)
    python benchmarks/contrastive.py --print-spec > c.yaml   # the spec it runs, as YAML
    mmfusion-attacks run c.yaml --out runs/c                 # the same experiments and the same table

Re-running with the same --out resumes. Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.contrastive import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
