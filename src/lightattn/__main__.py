"""`python -m lightattn ...` runs the `lightattn` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
