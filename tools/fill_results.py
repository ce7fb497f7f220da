"""Fill the AP figures of the READMEs from the committed comparison report.

    python tools/fill_results.py [--csv projects/benchmarks/comparison.csv] [FILE ...]

Default files: ``README.md`` and ``projects/*/README.md``. A table cell ``X <!-- AP: M ... -->``
gets each named model's mean segm AP over seeds (box AP for a box detector); the lines between
``<!-- results: M ... -->`` and ``<!-- /results -->`` become a table of the named models. A named
model without a row in the CSV is an error naming the file and the line.
"""

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="*", help="default: README.md projects/*/README.md")
    p.add_argument("--csv", default=os.path.join(ROOT, "projects", "benchmarks", "comparison.csv"))
    p.add_argument("--reference", default="MaskRCNN_R_18", help="the baseline model of the text")
    args = p.parse_args(argv)
    from instseg_d2.benchmark.readme_results import fill_files

    files = args.files or [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "projects", "*", "README.md"))
    )
    for path in fill_files(files, args.csv, args.reference):
        print(f"filled {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
