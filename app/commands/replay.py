"""``probescope replay --db PATH --versions A.onnx B.onnx ...``: replay captured failures (and a
control set of passing captures) on model versions; print verdicts per version and save the
replay in the workspace."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from app.commands import COMMANDS, _args
from app.commands._progress import progress_line
from app.core.domain import CaptureStatus
from app.core.replay import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_BATCH_ROWS,
    Criteria,
    ReplayResult,
    Selection,
    replay,
    select_case_set,
)
from app.core.replay_export import export_path, write_cases_csv
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import ReplayError, open_target
from app.core.store import Store, StoreError
from app.core.versions import VersionError, find, registered, verify_unchanged


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help=COMMANDS["replay"])
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--versions", nargs="+", metavar="VERSION",
                   help="ONNX files, v2+http:// or tfserving+http:// endpoints, or registered "
                        "version names, in bisect order (default: every registered version, in "
                        "registry order)")
    p.add_argument("--endpoint", help="only failures of this endpoint (its URI, or a part of it "
                   "that names one endpoint, e.g. wine-v1)")
    p.add_argument("--kind", action="append", choices=[s.value for s in CaptureStatus
                                                       if s is not CaptureStatus.OK],
                   help="only failures of this kind (repeatable)")
    p.add_argument("--label", help="only captures with this ground-truth label")
    p.add_argument("--model-version", help="only captures made by this model version")
    p.add_argument("--since", type=_instant, help="only captures at or after this time "
                   "(ISO 8601, e.g. 2026-11-23T11:40, or Unix seconds)")
    p.add_argument("--until", type=_instant, help="only captures at or before this time")
    p.add_argument("--limit", type=_args.count, default=1000, help="most failures to replay")
    p.add_argument("--controls", type=_args.size, default=200,
                   help="passing captures replayed as a control set (default 200)")
    p.add_argument("--provider", default="cpu", help="onnxruntime provider for ONNX files")
    p.add_argument("--batch-size", type=_args.count,
                   help=f"rows per inference call (default: up to {MAX_BATCH_ROWS}, fewer for "
                        "large inputs); latency is each batch's wall time shared among its "
                        "rows, so use 1 for per-request latency")
    p.add_argument("--min-confidence", type=_args.share, default=DEFAULT_MIN_CONFIDENCE,
                   help="confidence below which a LOW_CONFIDENCE capture still fails")
    p.add_argument("--slo-ms", type=_args.positive,
                   help="latency above which a SLOW capture still fails, timed one request at "
                        "a time (default: the SLO its endpoint was probed with)")
    p.add_argument("--no-save", action="store_true", help="do not save the replay")
    saved = p.add_mutually_exclusive_group()
    saved.add_argument("--list", action="store_true", help="list the saved replays and stop")
    saved.add_argument("--show", metavar="ID|latest",
                       help="print a saved replay's summary again (runs nothing)")
    p.add_argument("--export", type=Path, metavar="FILE.csv",
                   help="also write every case (role, kind, label, first failing version; per "
                        "version class, confidence, latency, verdict, error) as CSV")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _instant(text: str) -> int:
    """ISO 8601 (local time when no zone is given) or Unix seconds -> ns since the epoch."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError, OSError):
            raise argparse.ArgumentTypeError(f"'{text}' is not a time; use ISO 8601 like "
                                             "2026-11-23T11:40 or Unix seconds") from None
    # Stamps are int64 nanoseconds: 1970 to 2262.
    if not 0 <= seconds < 2**63 / 1e9:
        raise argparse.ArgumentTypeError(f"'{text}' is outside 1970 to 2262")
    return int(seconds * 1e9)



def _locations(store: Store, wanted: list[str] | None) -> list[tuple[str, str | None]]:
    """(location, name) per version: files and URIs as given, names looked up."""
    if not wanted:
        found = registered(store)
        if not found:
            raise ReplayError("no versions given and none registered; pass --versions A.onnx "
                              "B.onnx ... or register them with `probescope versions add`")
        for v in found:
            verify_unchanged(v)
        return [(v.location, v.name) for v in found]
    out = []
    for w in wanted:
        if Path(w).is_file():
            # A registered file given by its path is held to its registration like its name.
            v = find(store, str(Path(w).resolve()))
            if v is not None:
                verify_unchanged(v)
            out.append((w, v.name if v is not None else None))
            continue
        if "://" in w or w.startswith("onnx:"):
            out.append((w, None))
            continue
        v = find(store, w)
        if v is None:
            raise ReplayError(f"'{w}' is neither a model file, an endpoint nor a registered "
                              "version")
        verify_unchanged(v)
        out.append((v.location, v.name))
    seen: dict[str, str] = {}
    for (location, _), given in zip(out, wanted, strict=True):
        key = str(Path(location).resolve()) if Path(location).is_file() else location
        if key in seen:
            raise ReplayError(f"'{given}' and '{seen[key]}' are one version; give it once")
        seen[key] = given
    return out


def _text(result: ReplayResult, shown: bool = False) -> str:
    """``shown``: a saved replay read back (--show), not one run now."""
    # Latency is each case's share of its batch's time: per row, not per request.
    lines = [f"{'version':<20} {'cases':>6} {'fixed':>6} {'still failing':>14} "
             f"{'newly broken':>13} {'errors':>7} {'p50 ms/row':>11} {'p95 ms/row':>11}"]
    for s in result.summaries():
        p50 = f"{s.latency_p50_ms:.4f}" if s.latency_p50_ms is not None else "-"
        p95 = f"{s.latency_p95_ms:.4f}" if s.latency_p95_ms is not None else "-"
        lines.append(f"{s.version:<20} {s.cases:>6} {s.fixed:>6} {s.still_failing:>14} "
                     f"{s.newly_broken:>13} {s.errors:>7} {p50:>11} {p95:>11}")
    for s in result.summaries():
        if s.error_reason:
            lines.append(f"{s.version}: {s.errors - s.unanswered} cases erred, most often: "
                         f"{s.error_reason}")
        if s.unanswered:
            lines.append(f"{s.version}: {s.unanswered} of {s.cases} cases got no answer "
                         f"({s.unanswered_reason}); they are neither fixed nor failing there")
    for s in result.summaries():
        if s.newly_broken_by_label:
            lines.append(f"{s.version} newly broken by label: " + ", ".join(
                f"{label}: {n}" for label, n in s.newly_broken_by_label.items()))
    first = result.first_failing()
    failures = [f for f, c in zip(first, result.cases, strict=True) if not c.control]
    counts: dict[str, int] = {}
    for f in failures:
        counts[f or "none"] = counts.get(f or "none", 0) + 1
    lines.append(f"{len(failures)} failures, {len(result.cases) - len(failures)} controls; "
                 "first failing version: "
                 + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if result.replay_id is not None:
        lines.append(f"replay {result.replay_id}" if shown else
                     f"saved as replay {result.replay_id}")
    return "\n".join(lines)


def _saved(args: argparse.Namespace) -> int:
    """``--list`` and ``--show``: what earlier replays found, read from the workspace."""
    store = Store(args.db, readonly=True)
    try:
        rows = store.replays()
        if args.list:
            listed = [{"id": r["id"], "created": _local(r["created_ns"]),
                       "versions": [v["name"] for v in json.loads(r["versions"])],
                       "cancelled": bool(r["cancelled"])} for r in rows]
            if args.json:
                print(json.dumps({"replays": listed}))
            elif not listed:
                print("no saved replays; run one with `probescope replay --db PATH`")
            else:
                print(f"{'id':>4}  {'created':<19}  versions")
                for r in listed:
                    print(f"{r['id']:>4}  {r['created']:<19}  {', '.join(r['versions'])}"
                          + ("  (cancelled)" if r["cancelled"] else ""))
            return 0
        if args.show == "latest":
            if not rows:
                raise ReplayError(f"no saved replays in {args.db}")
            wanted = int(rows[0]["id"])
        else:
            try:
                wanted = int(args.show)
            except ValueError:
                raise ReplayError(f"--show takes a replay id or 'latest', not '{args.show}'; "
                                  "see --list") from None
            if not 0 < wanted < 2**63:  # SQLite's integers
                raise ReplayError(f"no saved replay {args.show}; see --list")
        result = load_replay(store, wanted)
        if args.export:
            write_cases_csv(result, args.export)
    finally:
        store.close()
    print(json.dumps(result.to_json()) if args.json else _text(result, shown=True))
    if args.export:
        print(f"wrote {args.export}", file=sys.stderr)
    return 0


def _progress_printer(versions: int) -> Callable[[float], None]:
    def note(share: float) -> str:
        version = min(versions, int(share * versions) + 1)
        return (f"  (version {version} of {versions}; Ctrl+C stops and keeps the finished "
                "ones)")

    return progress_line("replaying", note)


def _local(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    if not args.db.exists():
        print(f"probescope: no workspace at {args.db}", file=sys.stderr)
        return 2
    try:
        if args.list and args.export:
            raise ReplayError("--export writes a replay's cases: give it with a run or with "
                              "--show, not with --list")
        if args.export:  # refused before the work, not after it
            export_path(args.export)
        if args.list or args.show is not None:
            return _saved(args)
    except (ReplayError, StoreError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    store = Store(args.db)
    targets = []
    not_saved = not_exported = None
    try:
        endpoint = store.resolve_endpoint(args.endpoint) if args.endpoint else None
        selection = Selection(endpoint=endpoint, kinds=tuple(args.kind or ()), label=args.label,
                              model_version=args.model_version, start_ns=args.since,
                              end_ns=args.until, limit=args.limit, controls=args.controls)
        cases = select_case_set(store, selection)
        # SLOW captures are held to --slo-ms, else to the SLO their endpoint was probed with.
        criteria = Criteria(args.min_confidence, args.slo_ms, store.slo_by_endpoint())
        if not (~cases.control).any():
            raise ReplayError(f"no failures to replay in {args.db}"
                              + (f" for {endpoint}" if endpoint else ""))
        for location, name in _locations(store, args.versions):
            targets.append(open_target(location, provider=args.provider, name=name))
        interrupted = threading.Event()

        def on_sigint(*_: object) -> None:
            if interrupted.is_set():  # asked twice: stop now, whatever is under way
                raise KeyboardInterrupt
            interrupted.set()
            print("\nprobescope: stopping after the batch under way; Ctrl+C again stops at "
                  "once, saving nothing", file=sys.stderr, flush=True)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            result = replay(cases, targets, selection=selection, batch_size=args.batch_size,
                            criteria=criteria,
                            progress=_progress_printer(len(targets)),
                            cancelled=interrupted.is_set)
        finally:
            signal.signal(signal.SIGINT, previous)
            if sys.stderr.isatty():
                print(file=sys.stderr)  # end the progress line
        if not args.no_save and result.runs:
            try:
                save_replay(store, result)  # a cancelled one too: the versions it finished
            except StoreError as exc:  # the replay is done: print it all the same
                not_saved = str(exc)
        if args.export:
            try:
                write_cases_csv(result, args.export)
            except ReplayError as exc:  # e.g. the disk filled: the replay is still printed
                not_exported = str(exc)
    except (ReplayError, StoreError, VersionError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    finally:
        for t in targets:
            t.close()
        store.close()
    print(json.dumps(result.to_json()) if args.json else _text(result))
    unjudged, made_by = result.unjudged_slow()
    if unjudged:
        print(f"probescope: {unjudged} SLOW failures were judged on their outputs only: their "
              "endpoint has no SLO (give --slo-ms), or the version that recorded them was not "
              "replayed"
              + (f" (recorded by model version {', '.join(made_by)})" if made_by else "")
              + "; its time here is what makes their recorded latency comparable",
              file=sys.stderr)
    if not_saved:
        print(f"probescope: the replay above is not saved ({not_saved}); run it again, or "
              "give --export FILE.csv to keep its cases", file=sys.stderr)
    if args.export and not not_exported:
        print(f"wrote {args.export}", file=sys.stderr)
    if not_exported:
        print(f"probescope: {not_exported}"
              + (f"; the replay is saved as {result.replay_id}: `--show "
                 f"{result.replay_id} --export FILE.csv` writes it again"
                 if result.replay_id is not None else ""), file=sys.stderr)
    if result.cancelled:
        print(f"probescope: stopped by Ctrl+C after {len(result.runs)} of {len(targets)} "
              "versions" + ("; the finished ones are saved"
                            if not (args.no_save or not_saved) else ""),
              file=sys.stderr)
        return 130
    silent = [s.version for s in result.summaries() if s.unanswered]
    if silent:
        print(f"probescope: {', '.join(silent)} could not be asked about every case; "
              "replay again once the server answers", file=sys.stderr)
        return 1
    return 1 if not_saved or not_exported else 0
