"""``python main.py [COMMAND]``: the same as the ``probescope`` command."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
