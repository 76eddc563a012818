"""``python -m paper_figures [NAME ...] [--quick] [--out DIR]``: the same as ``memjax figures``."""

import sys

from memjax.cli import main

sys.exit(main(["figures", *sys.argv[1:]]))
