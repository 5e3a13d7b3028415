"""``python main.py [COMMAND]``: the same as the ``probescope`` command."""

import sys

if __name__ == "__main__":
    try:
        from app.cli import main

        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C while Python was still importing
        sys.exit(130)
