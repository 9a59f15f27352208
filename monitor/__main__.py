"""``python -m monitor`` is the same as the ``news-monitor`` console script."""

import sys

from monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
