"""``probescope contract check MODEL [--targets cpu,cuda,agent+http://...] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core.contract import (
    LATENCY_RUNS,
    MIN_RUNS,
    PASS,
    ContractError,
    ContractReport,
    measure,
    prepare_check,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contract", help=COMMANDS["contract"])
    actions = p.add_subparsers(dest="contract_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="measure each clause of MODEL's contract on each target",
        description="The contract is <model stem>.contract.toml (or model.contract.toml) "
                    "beside each model. Exit status 0 when every target passed, 1 otherwise.")
    check.add_argument("models", nargs="+", metavar="MODEL", help="ONNX model files")
    check.add_argument("--targets", default="cpu",
                       help="comma-separated: onnxruntime providers (cpu, cuda, ...) or "
                            "agent+http://HOST:PORT (default: cpu)")
    check.add_argument("--contract", type=Path, help="contract file (one MODEL only)")
    check.add_argument("--runs", type=_runs, default=LATENCY_RUNS,
                       help=f"single-row runs for latency (default {LATENCY_RUNS}; at least "
                            f"{MIN_RUNS}, so that p95 is not simply the slowest run)")
    check.add_argument("--json", action="store_true", help="print one JSON object")


def _text(report: ContractReport) -> str:
    m = report.model
    lines = [f"{m.name} ({m.version or 'no version'}) against {report.contract.path}"]
    for t in report.targets:
        lines.append(f"  {t.target}: {t.status.upper()}" + (f" — {t.reason}" if t.reason else ""))
        for c in t.clauses:
            limit = "" if c.limit is None else f" (limit {c.limit})"
            detail = f"  [{c.detail}]" if c.detail else ""
            lines.append(f"    {c.status:<8} {c.name:<15} {c.measured}{limit}{detail}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        print("probescope: --targets names no target", file=sys.stderr)
        return 2
    from probes.onnx_local import PROVIDERS

    unknown = [t for t in targets
               if t not in PROVIDERS and not t.startswith(("agent+http://", "agent+https://"))]
    if unknown:
        print(f"probescope: unknown target '{unknown[0]}'; use {', '.join(PROVIDERS)} or "
              "agent+http://HOST:PORT", file=sys.stderr)
        return 2
    if args.contract and len(args.models) > 1:
        print("probescope: --contract applies to one MODEL; give one", file=sys.stderr)
        return 2
    try:
        # Every model, contract and validation file is read and vetted before any is
        # measured: a bad third model is one line at once, not after minutes of measuring.
        prepared = [prepare_check(m, contract_path=args.contract) for m in args.models]
        reports = [measure(p, targets, runs=args.runs) for p in prepared]
    except ContractError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"models": [r.to_json() for r in reports]}))
    else:
        print("\n".join(_text(r) for r in reports))
    return 0 if all(t.status == PASS for r in reports for t in r.targets) else 1


def _runs(text: str) -> int:
    # Under 20 runs the 95th percentile is the slowest one, and a limit judged on it would
    # pass or fail on a single hiccup.
    return _args._whole(text, MIN_RUNS)
