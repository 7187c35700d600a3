"""`python -m wsec ...`: the same command line as `wsec ...`."""

import sys

from wsec.cli import main

if __name__ == "__main__":
    sys.exit(main())
