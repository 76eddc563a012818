"""`python -m memjax ...` is the same as `memjax ...`."""

import sys

from memjax.cli import main

sys.exit(main())
