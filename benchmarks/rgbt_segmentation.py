"""RGB-T segmentation under per-modality attacks: the MFNet adversarial study and the
segmentation-robustness analyses (least-likely targets, transfer across models and scales,
randomised input transforms vs EOT), a thin preset over the harness's spec
(mmfusion_attacks.harness.rgbt).

    python benchmarks/rgbt_segmentation.py                      # embedded SYNTHETIC default
    python benchmarks/rgbt_segmentation.py --model mfnet --weights final.pth --data-root MF/ --device cuda
    python benchmarks/rgbt_segmentation.py --model mfnet --weights final.pth --images 01234N.png 01477D.png

    python benchmarks/rgbt_segmentation.py --print-spec > rgbt.yaml   # the spec it runs, as YAML
    mmfusion-attacks run rgbt.yaml --out runs/rgbt                    # the same run: the same table

--print-spec prints the spec built from the other options and exits without work; `mmfusion-attacks
run` on that file reproduces this script's table exactly. Results go to --out (default
runs/rgbt_segmentation: report.html / .md, results.csv / .json, summary.json); re-running resumes.
Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.rgbt import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
