"""Joint attacks and the worst case over modality subsets: which subset of modalities breaks each
model (image + report models of the chest X-ray study, an RGB-T classifier, an image + text + audio
classifier, MFNet segmentation), with supersets never reported weaker than their subsets. A thin
preset: it builds one harness spec and runs it (resumable; reports in --out).

    python benchmarks/joint.py                          # embedded SYNTHETIC defaults, CPU
    python benchmarks/joint.py --print-spec > joint.yaml
    mmfusion-attacks run joint.yaml --out runs/joint    # the same run, the same table

Run with --help for every option.
"""

import sys

from mmfusion_attacks.harness.joint import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
