"""``python main.py [COMMAND]``: the same as the ``probescope`` command."""

import sys

if __name__ == "__main__":
    try:
        from app.cli import main

        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C while Python was still importing
        sys.exit(130)
    except ImportError as exc:  # ... or a native module, which turns it into ImportError
        if isinstance(exc.__context__, KeyboardInterrupt):
            sys.exit(130)
        raise
