"""The CLIP-like contrastive study: zero-shot classification under white-, grey- and black-box attacks
on the image, on the class prompts, and on both (a thin preset over mmfusion_attacks.harness).

    python benchmarks/contrastive.py     # the CLIP-like model on Fashion-MNIST (SYNTHETIC stand-in without it)

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.contrastive import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
