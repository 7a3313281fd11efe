"""RGB-T segmentation under per-modality attacks: the MFNet adversarial study and the
segmentation-robustness analyses (a thin preset over mmfusion_attacks.harness).

    python benchmarks/rgbt_segmentation.py                      # embedded SYNTHETIC default
    python benchmarks/rgbt_segmentation.py --model mfnet --weights final.pth --data-root MF/ --device cuda
    python benchmarks/rgbt_segmentation.py --model mfnet --weights final.pth --images 01234N.png 01477D.png

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.rgbt import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
