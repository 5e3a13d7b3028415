"""``probescope contract check MODEL [--targets cpu,cuda,agent+http://...] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core.contract import (
    LATENCY_RUNS,
    MIN_RUNS,
    PASS,
    UNREACHABLE,
    ContractError,
    ContractReport,
    PreparedCheck,
    measure,
    prepare_check,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contract", help=COMMANDS["contract"])
    actions = p.add_subparsers(dest="contract_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="measure each clause of MODEL's contract on each target",
        description="The contract is <model stem>.contract.toml (or model.contract.toml) "
                    "beside each model. Exit status 0 when every target passed, 1 when one "
                    "did not, 2 when a model could not be checked at all (the others are "
                    "still measured, and it is reported as failed with the reason).")
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
    for key in report.not_checked:
        # A limit the contract sets that no target given here was held to: said, never dropped.
        why = ("no target given at this address" if key.startswith("agent+")
               else "no agent in --targets" if key == "agent" else "not in --targets")
        lines.append(f"  not checked: {key} ({why})")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class NotChecked:
    """A model that could not be checked at all (unreadable, no contract, a validation file
    it cannot take): reported in its place among the others, which are still measured."""

    path: str
    reason: str

    def to_json(self, targets: list[str]) -> dict:
        # Every target is given, never a pass: a script that reads the targets, not
        # "passed", must not take an empty list for "nothing failed".
        return {"model": str(Path(self.path).resolve()), "name": Path(self.path).stem,
                "version": None, "contract": None, "passed": False, "status": "failed",
                "reason": self.reason,
                "targets": [{"target": t, "status": UNREACHABLE, "clauses": [],
                             "reason": f"not measured: {self.reason}"} for t in targets]}

    def text(self) -> str:
        return f"{self.path}: FAILED — {self.reason}"


def _refusal(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot be run, in one line; None when they can."""
    targets = [t.strip() for t in args.targets.split(",")]
    if not any(targets):
        return "--targets names no target"
    if not all(targets):
        return (f"--targets '{args.targets}' has an empty entry; name each target once, "
                "separated by commas (e.g. cpu,cuda)")
    from probes.onnx_local import PROVIDERS

    unknown = [t for t in targets
               if t not in PROVIDERS and not t.startswith(("agent+http://", "agent+https://"))]
    if unknown:
        return (f"unknown target '{unknown[0]}'; use {', '.join(PROVIDERS)} or "
                "agent+http://HOST:PORT")
    twice = next((t for k, t in enumerate(targets) if t in targets[:k]), None)
    if twice is not None:  # measured twice, it would only print its report twice
        return f"target '{twice}' is given twice; give it once"
    seen: dict[Path, str] = {}
    for m in args.models:
        key = Path(m).resolve()
        if key in seen:
            return f"'{m}' and '{seen[key]}' are one model file; give it once"
        seen[key] = m
    if args.contract and len(args.models) > 1:
        return "--contract applies to one MODEL; give one"
    return None


def run(args: argparse.Namespace) -> int:
    refused = _refusal(args)
    if refused:
        print(f"probescope: {refused}", file=sys.stderr)
        if args.json:  # a CI parser reading stdout gets an answer, not nothing
            print(json.dumps({"error": refused, "models": []}))
        return 2
    targets = [t.strip() for t in args.targets.split(",")]
    # Every model, contract and validation file is read and vetted before any is measured:
    # a bad third model is said at once, not after minutes of measuring the first two; the
    # good ones are still measured, and the bad one keeps its place in the report. Its
    # reason is said once, there (its FAILED line, or its "reason" in --json).
    checks: list[PreparedCheck | NotChecked] = []
    for m in args.models:
        try:
            checks.append(prepare_check(m, contract_path=args.contract))
        except ContractError as exc:
            checks.append(NotChecked(m, str(exc)))
    refused = [c.path for c in checks if isinstance(c, NotChecked)]
    if refused and len(refused) < len(checks):  # only when there is measuring to wait for
        print(f"probescope: cannot check {', '.join(refused)} (the reason is in the report); "
              "measuring the other models first", file=sys.stderr)
    reports: list[ContractReport | NotChecked] = []
    for check in checks:
        if isinstance(check, NotChecked):
            reports.append(check)
            continue
        try:
            reports.append(measure(check, targets, runs=args.runs))
        except ContractError as exc:
            reports.append(NotChecked(check.model.location, str(exc)))
    if args.json:
        print(json.dumps({"models": [r.to_json(targets) if isinstance(r, NotChecked)
                                     else r.to_json() for r in reports]}))
    else:
        print("\n".join(r.text() if isinstance(r, NotChecked) else _text(r) for r in reports))
    if any(isinstance(r, NotChecked) for r in reports):
        return 2
    return 0 if all(t.status == PASS for r in reports for t in r.targets) else 1


def _runs(text: str) -> int:
    # Under 20 runs the 95th percentile is the slowest one, and a limit judged on it would
    # pass or fail on a single hiccup.
    return _args._whole(text, MIN_RUNS)
