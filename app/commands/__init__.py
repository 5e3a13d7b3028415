"""One module per CLI subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

A new subcommand is a new module here plus its line in ``COMMANDS``. The one-line helps live
here so ``probescope --help`` lists every command without importing any of them (together
they import pandas, scipy, Evidently and onnxruntime: two seconds before any help showed).
"""

import keyword

COMMANDS = {  # command: its one-line help, in the order ``--help`` lists them
    "watch": "attach probes headless, record, print a summary",
    "demo": "run the built-in demo scenario headless",
    "agent": "run the edge agent beside a model (headless, no Qt)",
    "drift": "per-column data drift against a reference",
    "tap": "recording reverse proxy: forward to a model server and record each request as a "
           "capture",
    "import": "load a production log (CSV, Parquet, JSON lines) as captures",
    "label": "join late ground-truth labels to captures by request id",
    "versions": "register model versions and list them",
    "contract": "check models against their handover contracts",
    "replay": "replay captured failures against model versions",
    "incidents": "list, judge, acknowledge and resolve incidents",
    "report": "write an incident's PDF report",
}


def module_name(command: str) -> str:
    """The module under ``app.commands`` that implements ``command``."""
    # A command spelled like a Python keyword (import) lives in a module with a trailing _.
    return f"{command}_" if keyword.iskeyword(command) else command
