"""``python -m edgeasr``: the same entry point as the ``edgeasr`` console script."""

import sys

from edgeasr.cli import main

if __name__ == "__main__":
    sys.exit(main())
