"""One module per CLI subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

A new subcommand is a new module here plus one name in ``COMMAND_MODULES``.
"""

COMMAND_MODULES = (
    "watch",
    "demo",
    "agent",
    "drift",
    "tap",
    "import_",
    "label",
    "versions",
    "contract",
    "replay",
    "incidents",
    "report",
)
