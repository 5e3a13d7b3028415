"""``probescope replay --db PATH --versions A.onnx B.onnx ...``: replay captured failures (and a
control set of passing captures) on model versions; print verdicts per version and save the
replay in the workspace.

Its options and the run are here; the saved replays (``--list``, ``--show``, ``--delete``) are
in ``_replay_saved``, the versions asked for in ``_replay_versions``, the printed summary in
``_replay_text`` and the Ctrl+C handling in ``_replay_interrupt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from app.commands import COMMANDS, _args
from app.commands._progress import progress_line
from app.commands._replay_interrupt import replay_interruptibly
from app.commands._replay_saved import run_saved
from app.commands._replay_text import result_text
from app.commands._replay_versions import (
    MissingFile,
    locations,
    name_apart,
    open_version,
    twins,
)
from app.core.domain import CaptureStatus, local_text
from app.core.replay import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_BATCH_ROWS,
    REQUEST_SAMPLE,
    Criteria,
    ReplayResult,
    Selection,
    count_failures,
    nothing_selected,
    replay,
    resolve_model_version,
    select_case_set,
    with_endpoint_thresholds,
)
from app.core.replay_export import MAX_INPUT_VALUES, export_path, write_cases_csv
from app.core.replay_store import save_replay
from app.core.replay_targets import ReplayError, Target
from app.core.store import Store, StoreError
from app.core.versions import VersionError


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
    p.add_argument("--model-version", help="only captures made by this model version: the "
                   "version string they recorded (e.g. 1.0.0), or a registered version's name "
                   "or the start of its sha256")
    p.add_argument("--since", type=_instant, help="only captures at or after this time "
                   "(ISO 8601, e.g. 2026-11-23T11:40, or Unix seconds)")
    p.add_argument("--until", type=_instant, help="only captures at or before this time")
    p.add_argument("--limit", type=_args.count, default=DEFAULT_LIMIT,
                   help="most failures to replay: above it, the newest are kept and the "
                        f"output says how many matched (default {DEFAULT_LIMIT})")
    p.add_argument("--controls", type=_args.size, default=200,
                   help="passing captures replayed as a control set (default 200)")
    p.add_argument("--provider", default="cpu", help="onnxruntime provider for ONNX files")
    p.add_argument("--batch-size", type=_args.count,
                   help=f"rows per inference call (default: up to {MAX_BATCH_ROWS}, fewer for "
                        "large inputs); the batched ms/row is each batch's wall time shared "
                        "among its rows")
    # None: not given, so a small replay's cap on the default is not worth a note.
    p.add_argument("--requests", type=_args.size,
                   help=f"cases sent again one request each to every version after the "
                        f"batches, for the latency p50/p95 (default {REQUEST_SAMPLE}; 0: none, "
                        "the percentiles are then of the batches' shares); at most every case "
                        "but the SLOW ones held to an SLO, which are timed alone anyway, and "
                        "the output says when fewer than asked could be; the batched ms/row "
                        "stays, as every case also ran in a batch")
    p.add_argument("--min-confidence", type=_args.share,
                   help="confidence below which a case fails, for every case (default: the "
                        "minimum its endpoint was probed with; for LOW_CONFIDENCE captures "
                        "and unlabelled controls of endpoints probed without one, "
                        f"{DEFAULT_MIN_CONFIDENCE:g})")
    p.add_argument("--slo-ms", type=_args.positive,
                   help="latency above which a SLOW capture still fails, timed one request at "
                        "a time (default: the SLO its endpoint was probed with)")
    p.add_argument("--no-save", action="store_true", help="do not save the replay")
    p.add_argument("--title", metavar="TEXT", type=_title,
                   help="a name for the saved replay, shown by --list and --show")
    saved = p.add_mutually_exclusive_group()
    saved.add_argument("--list", action="store_true", help="list the saved replays (endpoint, "
                       "filters, cases, versions) and stop")
    saved.add_argument("--show", metavar="ID|latest",
                       help="print a saved replay's summary again (runs nothing)")
    saved.add_argument("--delete", metavar="ID", type=_replay_id,
                       help="delete a saved replay and its results (the captures stay)")
    p.add_argument("--export", type=Path, metavar="FILE.csv",
                   help="also write every case (endpoint, time in UTC, request id, role, kind, "
                        "label, recorded prediction and confidence, first failing version; per "
                        "version class, confidence, latency, verdict, why, error) as CSV")
    p.add_argument("--export-inputs", action="store_true",
                   help="with --export: also each case's input values, a column per feature "
                        "(named by its endpoint's payload columns where known); inputs of more "
                        f"than {MAX_INPUT_VALUES} values (images) are left out, and said so")
    p.add_argument("--json", action="store_true", help="print one JSON object")


DEFAULT_LIMIT = Selection().limit


def _title(text: str) -> str:
    title = " ".join(text.split())  # one line in --list, whatever was pasted
    if not title:
        raise argparse.ArgumentTypeError("a title needs some text")
    return title


def _replay_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a replay id; see --list") from None
    if not 0 < value < 2**63:  # SQLite's integers
        raise argparse.ArgumentTypeError(f"no saved replay {text}; see --list")
    return value


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
    if not 0 <= seconds < _LAST_SECOND:
        raise argparse.ArgumentTypeError(f"'{text}' is outside 1970 to 2262"
                                         + _finer_unit(text))
    return int(seconds * 1e9)


_LAST_SECOND = 2**63 / 1e9


def _finer_unit(text: str) -> str:
    """A hint for a stamp in ms, µs or ns (what logs and JavaScript write), which as seconds
    lands far past 2262: the same instant in seconds, as the option takes it (decimal, so
    the digits given are the digits shown)."""
    try:
        stamp = Decimal(text.strip())
    except InvalidOperation:
        return ""
    if not stamp.is_finite():
        return ""
    for k, unit in enumerate(("milliseconds", "microseconds", "nanoseconds"), start=1):
        seconds = stamp.scaleb(-3 * k)
        if 1e8 <= seconds < _LAST_SECOND:  # 1973 on: a plausible stamp
            return f" as Unix seconds; if it is in {unit}, give {seconds:f}"
    return ""


def _progress_printer(versions: int) -> Callable[[float], None]:
    def note(share: float) -> str:
        version = min(versions, int(share * versions) + 1)
        return (f"  (version {version} of {versions}; Ctrl+C stops and keeps the finished "
                "ones)")

    return progress_line("replaying", note)


def run(args: argparse.Namespace) -> int:
    if not args.db.exists():
        print(f"probescope: no workspace at {args.db}", file=sys.stderr)
        return 2
    try:
        if (args.list or args.delete is not None) and args.export:
            raise ReplayError("--export writes a replay's cases: give it with a run or with "
                              f"--show, not with {'--list' if args.list else '--delete'}")
        if args.export_inputs and not args.export:
            raise ReplayError("--export-inputs adds the inputs to --export's file; give "
                              "--export FILE.csv too")
        if args.title and args.no_save:
            raise ReplayError("--title names the saved replay, and --no-save saves none")
        if args.export:  # refused before the work, not after it
            export_path(args.export)
        if args.list or args.show is not None or args.delete is not None:
            # A saved replay is shown as it was judged; these shape a new run only.
            ignored = [flag for flag, value in (
                ("--versions", args.versions), ("--endpoint", args.endpoint),
                ("--kind", args.kind), ("--label", args.label),
                ("--model-version", args.model_version), ("--since", args.since),
                ("--until", args.until), ("--min-confidence", args.min_confidence),
                ("--slo-ms", args.slo_ms), ("--batch-size", args.batch_size),
                ("--requests", args.requests is not None),
                ("--title", args.title)) if value]
            if ignored:
                does = ("--list reads saved ones as they were judged" if args.list
                        else "--show reads saved ones as they were judged"
                        if args.show is not None else "--delete removes a saved one")
                raise ReplayError(f"{', '.join(ignored)} "
                                  f"{'shape' if len(ignored) > 1 else 'shapes'} a new replay; "
                                  f"{does}")
            return run_saved(args)
        if args.since is not None and args.until is not None and args.since > args.until:
            raise ReplayError(f"--since ({local_text(args.since)}) is after --until "
                              f"({local_text(args.until)}); no capture lies between them")
    except (ReplayError, StoreError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    # Nothing to write with --no-save: a workspace on a read-only disk can be replayed.
    store = Store(args.db, readonly=args.no_save)
    targets: list[Target] = []
    not_saved = not_exported = None
    try:
        endpoint = store.resolve_endpoint(args.endpoint) if args.endpoint else None
        model_version = args.model_version
        if model_version is not None:
            model_version, mapped = resolve_model_version(store, model_version, endpoint)
            if mapped:
                print(f"probescope: {mapped}", file=sys.stderr)
        selection = Selection(endpoint=endpoint, kinds=tuple(args.kind or ()), label=args.label,
                              model_version=model_version, start_ns=args.since,
                              end_ns=args.until, limit=args.limit, controls=args.controls)
        cases = select_case_set(store, selection)
        # SLOW captures are held to --slo-ms, else to the SLO their endpoint was probed with;
        # every case to --min-confidence, else to the minimum its endpoint was probed with.
        criteria = with_endpoint_thresholds(Criteria(
            DEFAULT_MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence,
            args.slo_ms, min_confidence_for_all=args.min_confidence is not None), store)
        failures = int(np.count_nonzero(~cases.control))
        if not failures:
            why = nothing_selected(store, selection)
            raise ReplayError(f"no failures to replay in {args.db}" + (
                f": {why}" if why else f" for {endpoint}" if endpoint else ""))
        # At the limit, more may match: counted (one COUNT, no blob read), so the output can
        # say how much of the population the newest `limit` stand for.
        matched = count_failures(store, selection) if failures >= selection.limit else failures
        located = locations(store, args.versions, args.provider)
        for location, name in located:
            targets.append(open_version(location, name, args.provider))
        name_apart(targets, store)
        if args.versions:
            # Named twice by the person, both are replayed (a copy against its original is
            # a fair check of timing noise); said, as the registry's twins are.
            for ks, sha in twins(located, store, args.provider):
                first, *again = (targets[k].name for k in ks)
                print(f"probescope: {', '.join(again)} {'is' if len(again) == 1 else 'are'} "
                      f"{first} again (the same model, sha256 {sha[:12]}…); replaying each as "
                      f"asked, though they answer alike and bisect credits {first}",
                      file=sys.stderr)
        try:
            result = replay_interruptibly(
                lambda cancelled: replay(cases, targets, selection=selection,
                                         batch_size=args.batch_size, criteria=criteria,
                                         progress=_progress_printer(len(targets)),
                                         cancelled=cancelled,
                                         requests=REQUEST_SAMPLE if args.requests is None
                                         else args.requests))
        except KeyboardInterrupt:  # a second Ctrl+C as the replay ended
            print("probescope: stopped; nothing saved", file=sys.stderr, flush=True)
            raise
        finally:
            if sys.stderr.isatty():
                print(file=sys.stderr)  # end the progress line
        result.failures_matched = max(matched, failures)  # captures may land meanwhile
        result.versions_asked = len(targets)
        result.requests_asked = args.requests
        result.title = args.title
        if not args.no_save and result.runs:
            try:
                # A cancelled one too (the versions it finished), with how far it got, so
                # --show can say so as this run does (in the title's place when it has none).
                save_replay(store, result, title=args.title or (
                    _stopped_after(result, len(targets)) if result.cancelled else None))
            except StoreError as exc:  # the replay is done: print it all the same
                not_saved = str(exc)
        if args.export:
            try:
                write_cases_csv(result, args.export, inputs=args.export_inputs)
            except ReplayError as exc:  # e.g. the disk filled: the replay is still printed
                not_exported = str(exc)
    except (ReplayError, StoreError, VersionError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    finally:
        for t in targets:
            t.close()
        store.close()
    summaries = result.summaries()
    print(json.dumps(result.to_json()) if args.json else result_text(result))
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
        print(f"probescope: {_stopped_after(result, len(targets))}"
              + ("; the finished ones are saved" if not (args.no_save or not_saved) else ""),
              file=sys.stderr)
        return 130
    silent = [(s, r) for s, r in zip(summaries, result.runs, strict=True) if s.unanswered]
    gone = {t.name: t.hint() for t in targets if isinstance(t, MissingFile)}
    for s, r in silent:
        if "://" not in r.location:
            # A local model that cannot take these inputs, or a registered file that is gone:
            # asking again will not change it.
            print(f"probescope: {s.version} could not be asked about {s.unanswered} of "
                  f"{s.cases} cases: {s.unanswered_reason}"
                  + (f"; {gone[s.version]}" if s.version in gone else ""), file=sys.stderr)
    servers = [s.version for s, r in silent if "://" in r.location]
    if servers:
        print(f"probescope: {', '.join(servers)} could not be asked about every case; "
              "replay again once the server answers", file=sys.stderr)
    if silent:
        return 1
    return 1 if not_saved or not_exported else 0


_STOPPED = "stopped by Ctrl+C after "


def _stopped_after(result: ReplayResult, versions: int) -> str:
    """Said when a run is cancelled, and saved as its title: the workspace keeps the versions
    it finished, not how many were asked for."""
    return f"{_STOPPED}{len(result.runs)} of {versions} versions"
