"""``probescope replay --db PATH --versions A.onnx B.onnx ...``: replay captured failures (and a
control set of passing captures) on model versions; print verdicts per version and save the
replay in the workspace."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import NoReturn

import numpy as np

from app.commands import COMMANDS, _args
from app.commands._progress import progress_line
from app.core.domain import CaptureStatus, EndpointUri, figure_text, not_a_file
from app.core.replay import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_BATCH_ROWS,
    REQUEST_SAMPLE,
    Criteria,
    ReplayResult,
    Selection,
    bisect_text,
    count_failures,
    judged_with,
    limit_text,
    nothing_selected,
    replay,
    resolve_model_version,
    select_case_set,
    selection_json,
    selection_text,
    with_endpoint_thresholds,
)
from app.core.replay_export import MAX_INPUT_VALUES, export_path, write_cases_csv
from app.core.replay_store import (
    STOPPED_NOTE,
    load_replay,
    save_replay,
    saved_counts,
    saved_selection,
    saved_title,
)
from app.core.replay_targets import LocalOnnxTarget, ReplayError, Target, open_target
from app.core.store import Store, StoreError
from app.core.summary import fit
from app.core.versions import (
    ModelVersion,
    VersionError,
    find,
    free_name,
    inspect_onnx,
    registered,
    verify_unchanged,
)


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
    p.add_argument("--requests", type=_args.size, default=REQUEST_SAMPLE,
                   help=f"cases sent again one request each to every version after the "
                        f"batches, for the latency p50/p95 (default {REQUEST_SAMPLE}; 0: none, "
                        "the percentiles are then of the batches' shares)")
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


def _locations(store: Store, wanted: list[str] | None,
               provider: str) -> list[tuple[str, str | None]]:
    """(location, name) per version: files and URIs as given, names looked up. A registered
    file, given by its path or in an ``onnx:`` URI, is held to its registration like its
    name, and keeps that name."""
    if not wanted:
        found = registered(store)
        if not found:
            raise ReplayError("no versions given and none registered; pass --versions A.onnx "
                              "B.onnx ... or register them with `probescope versions add`")
        for v in found:
            verify_unchanged(v)
        found, again = _registered_once(found)
        for note in again:
            print(f"probescope: {note}", file=sys.stderr)
        return [(v.location, v.name) for v in found]
    out = []
    for w in wanted:
        path = EndpointUri.parse(w).target if w.startswith("onnx:") else w
        if Path(path).is_file():
            v = find(store, str(Path(path).resolve()))
            if v is not None:
                verify_unchanged(v)
            out.append((w, v.name if v is not None else None))
            continue
        if "://" in w or w.startswith("onnx:"):
            out.append((w, None))
            continue
        v = find(store, w)
        if v is None:
            if Path(w).is_dir():
                models = sorted(Path(w).glob("*.onnx"))
                raise ReplayError(f"'{w}' is a folder, not a model file; "
                                  + (f"give the .onnx file in it, e.g. {models[0]}" if models
                                     else "it holds no .onnx file"))
            if w.lower().endswith(".onnx") or "/" in w or os.sep in w:
                # A path, not a name: said as contract check and versions add say it.
                raise ReplayError(not_a_file(Path(w).resolve(), "model file")
                                  or f"cannot read {w}")
            known = [r.name for r in registered(store)]
            raise ReplayError(f"'{w}' is neither a model file, an endpoint nor a registered "
                              "version (registered: "
                              + (", ".join(known) if known else "none") + ")")
        verify_unchanged(v)
        out.append((v.location, v.name))
    seen: dict[str, str] = {}
    for (location, _), given in zip(out, wanted, strict=True):
        key = _identity(location, provider)
        if key in seen:
            raise ReplayError(f"'{given}' and '{seen[key]}' are one version; give it once")
        seen[key] = given
    return out


def _twins(located: list[tuple[str, str | None]], store: Store,
           provider: str) -> list[tuple[list[int], str]]:
    """Model files given under different names that hold the same bytes (and run on the
    same provider): each group's places in ``located``, and its sha256. Files are hashed only
    where another file given has the same size, so a replay of distinct models reads none."""
    by_size: dict[tuple[int, str], list[tuple[int, Path]]] = {}
    for k, (location, _) in enumerate(located):
        if "://" in location:
            continue
        path = Path(EndpointUri.parse(location).target if location.startswith("onnx:")
                    else location)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        by_size.setdefault((size, _identity(location, provider).rpartition("?")[2]),
                           []).append((k, path))
    groups: list[tuple[list[int], str]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_sha: dict[str, list[int]] = {}
        for k, path in same_size:
            known = find(store, str(path.resolve()))
            try:
                sha = known.sha256 if known and known.sha256 else inspect_onnx(path).sha256
            except VersionError:
                continue  # opening it says what is wrong with it
            if sha:
                by_sha.setdefault(sha, []).append(k)
        groups += [(ks, sha) for sha, ks in by_sha.items() if len(ks) > 1]
    return groups


def _registered_once(found: list[ModelVersion]) -> tuple[list[ModelVersion], list[str]]:
    """The registered versions with each model once (by its bytes' sha256, a server by its
    URI), and a note per model registered under more than one name: run twice, it would
    double the replay's time, and bisect would credit the first name anyway."""
    kept: dict[str, ModelVersion] = {}
    again: dict[str, list[str]] = {}
    for v in found:
        key = v.sha256 or v.location
        if key in kept:
            again.setdefault(key, []).append(v.name)
        else:
            kept[key] = v
    notes = [f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {kept[key].name} "
             f"registered again (the same model); replaying it once, as {kept[key].name}"
             for key, names in again.items()]
    return list(kept.values()), notes


def _where(location: str) -> str:
    """Where a version lives, as the registry writes it: a file's absolute path (also for an
    ``onnx:`` URI), a server's URI."""
    if location.startswith("onnx:"):
        location = EndpointUri.parse(location).target
    elif "://" in location:
        return location
    return str(Path(location).resolve())


def _identity(location: str, provider: str) -> str:
    """What makes two versions one: the same file on the same provider, or the same URI (one
    file on two providers is a fair comparison to ask for)."""
    if location.startswith("onnx:"):
        provider = EndpointUri.parse(location).param("provider", provider) or provider
    elif "://" in location:
        return location
    return f"{_where(location)}?provider={provider}"


def _name_apart(targets: list[Target], store: Store) -> None:
    """A name per target that no other version in this replay, nor another registered one,
    holds: rows, bisect, CSV columns and JSON are told apart by name. A name held elsewhere
    becomes NAME@folder (a server's: NAME@HOST:PORT), as the Versions panel registers it;
    the same file again (on another provider) becomes NAME@provider."""
    taken = {v.name: _where(v.location) for v in registered(store)}
    used: set[str] = set()
    for t in targets:
        where = _where(t.location)
        name = free_name(t.name, where, taken)
        if name in used:
            base, n = name, 2
            name = f"{base}@{t.provider}" if isinstance(t, LocalOnnxTarget) else base
            while name in used or taken.get(name, where) != where:
                name, n = f"{base}-{n}", n + 1
        t.name = name
        taken[name] = where
        used.add(name)


def _text(result: ReplayResult, shown: bool = False, stop_note: str | None = None) -> str:
    """``shown``: a saved replay read back (--show), not one run now; ``stop_note``: the note
    an older run saved in its title's place when Ctrl+C cut it short."""
    # p50/p95 are of the requests each version answered one case at a time (a replay
    # saved before those were timed has its batches' shares: "ms/row"); "batched" is a
    # case's share of its batch's time, the version's pace through a backlog.
    summaries = result.summaries()
    per = "ms" if any(s.requests_timed for s in summaries) else "ms/row"
    width = max([20, *(len(s.version) for s in summaries)])  # long names keep the columns
    lines = [f"{'version':<{width}} {'cases':>6} {'fixed':>6} {'still failing':>14} "
             f"{'newly broken':>13} {'broken again':>13} {'errors':>7} {'p50 ' + per:>11} "
             f"{'p95 ' + per:>11} {'batched ms/row':>15}"]
    for s in summaries:
        p50, p95, batched = ("-" if v is None else figure_text(v) for v in (
            s.latency_p50_ms, s.latency_p95_ms, s.batched_ms_per_row))
        lines.append(f"{s.version:<{width}} {s.cases:>6} {s.fixed:>6} {s.still_failing:>14} "
                     f"{s.newly_broken:>13} {s.broken_again:>13} {s.errors:>7} {p50:>11} "
                     f"{p95:>11} {batched:>15}")
    timed = max((s.requests_timed for s in summaries), default=0)
    if timed:
        lines.append(f"latency: p50/p95 of {timed} requests per version, one case each, the "
                     "versions taking turns; batched: a case's share of its batch's time")
    for s in summaries:
        if s.error_reason:
            lines.append(f"{s.version}: {s.errors} cases erred, most often: {s.error_reason}")
        if s.unanswered:
            lines.append(f"{s.version}: {s.unanswered} of {s.cases} cases got no answer "
                         f"({s.unanswered_reason}); they are neither fixed nor failing there")
        if s.unmatched_labels:
            lines.append(f"{s.version}: {s.unmatched_labels} labels name no class of its "
                         "model (it carries no matching `classes` metadata), so they never "
                         "match its predictions")
    for s in summaries:
        if s.newly_broken_by_label:
            lines.append(f"{s.version} newly broken by label: " + ", ".join(
                f"{label}: {n}" for label, n in s.newly_broken_by_label.items()))
        if s.broken_again:
            lines.append(f"{s.version} broken again: {s.broken_again} failures an earlier "
                         "version fixed fail here (fixed by " + ", ".join(
                             f"{v} {n}" for v, n in s.broken_again_after.items()) + ")")
    left_out = limit_text(result)
    if left_out:
        lines.append(left_out)
    lines.append(bisect_text(result))
    lines.append(f"selected: {selection_text(result.selection)}")
    lines.append(judged_with(result.criteria))
    title = f' "{result.title}"' if result.title else ""
    if result.replay_id is not None and not shown:
        lines.append(f"saved as replay {result.replay_id}{title}")
    elif result.replay_id is not None:
        lines.append(f"replay {result.replay_id}{title}{_cancelled_text(result, stop_note)}")
    return "\n".join(lines)


def _cancelled_text(result: ReplayResult, stop_note: str | None) -> str:
    """A cancelled replay holds the versions it finished: said, or it reads as whole."""
    if not result.cancelled:
        return ""
    if stop_note:
        return f" (cancelled: {stop_note})"
    done = len(result.runs)
    if result.versions_asked:
        return f" (cancelled after {done} of {result.versions_asked} versions)"
    return f" (cancelled after {done} version{'' if done == 1 else 's'})"


def _listed(row: dict, cases: tuple[int, int] | None) -> dict:
    """One saved replay as --list shows it: when, its title, endpoint and filters, how many
    failures (of how many matched) and controls, versions, and what it was judged with."""
    counts = saved_counts(row)
    selection = saved_selection(row)
    failures = counts.get("failures", cases[0] if cases else None)
    controls = counts.get("controls", cases[1] if cases else None)
    return {"id": row["id"], "created": _local(row["created_ns"]), "title": saved_title(row),
            "versions": [v["name"] for v in json.loads(row["versions"])],
            "cancelled": bool(row["cancelled"]),
            "criteria": json.loads(row["criteria"] or "{}"),
            "endpoint": selection.endpoint if selection else None,
            "selection": selection_json(selection), "selected": selection_text(selection),
            "cases": row["cases"], "failures": failures, "controls": controls,
            "failures_matched": counts.get("failures_matched")}


def _list_text(listed: list[dict]) -> str:
    def failures(r: dict) -> str:
        matched = r["failures_matched"]
        return (f"{r['failures']} of {matched}" if matched and matched > (r["failures"] or 0)
                else "?" if r["failures"] is None else str(r["failures"]))

    selected = [fit(r["selected"], 48) for r in listed]
    width = max(len("selected"), *map(len, selected))
    wide = max(len("failures"), *(len(failures(r)) for r in listed))
    lines = [f"{'id':>4}  {'created':<19}  {'failures':>{wide}}  {'controls':>8}  "
             f"{'selected':<{width}}  versions"]
    for r, chosen in zip(listed, selected, strict=True):
        # A replay held to the person's minimum, not the endpoints': said, or it reads like
        # the others while its counts differ.
        given = r["criteria"].get("min_confidence") \
            if r["criteria"].get("min_confidence_for_all") else None
        controls = "?" if r["controls"] is None else r["controls"]
        lines.append(f"{r['id']:>4}  {r['created']:<19}  {failures(r):>{wide}}  "
                     f"{controls:>8}  {chosen:<{width}}  {', '.join(r['versions'])}"
                     + (f'  "{r["title"]}"' if r["title"] else "")
                     + ("  (cancelled)" if r["cancelled"] else "")
                     + (f"  (every case held to confidence {given:g})"
                        if given is not None else ""))
    return "\n".join(lines)


def _saved(args: argparse.Namespace) -> int:
    """``--list``, ``--show`` and ``--delete``: what earlier replays found, read from the
    workspace; or one of them gone."""
    if args.delete is not None:
        return _delete(args)
    store = Store(args.db, readonly=True)
    try:
        rows = store.replays()
        if args.list:
            # Replays saved before their counts were kept: counted from their case rows.
            older = [r["id"] for r in rows if "failures" not in saved_counts(r)]
            cases = store.replay_case_counts(older)
            listed = [_listed(r, cases.get(r["id"])) for r in rows]
            if args.json:
                print(json.dumps({"replays": listed}))
            elif not listed:
                print("no saved replays; run one with `probescope replay --db PATH`")
            else:
                print(_list_text(listed))
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
        title = next((r["title"] for r in rows if r["id"] == wanted), None)
        if args.export:
            write_cases_csv(result, args.export, inputs=args.export_inputs,
                            workspace=args.db)
    finally:
        store.close()
    stop_note = title if title and STOPPED_NOTE.fullmatch(title) else None
    print(json.dumps(result.to_json()) if args.json
          else _text(result, shown=True, stop_note=stop_note))
    if args.export:
        print(f"wrote {args.export}", file=sys.stderr)
    return 0


def _delete(args: argparse.Namespace) -> int:
    """``--delete ID``: the replay, its cases and its results, in one transaction."""
    store = Store(args.db)
    try:
        row = next((r for r in store.replays() if r["id"] == args.delete), None)
        # Read before it goes: the line below says which replay that was.
        listed = None if row is None else _listed(
            row, store.replay_case_counts([args.delete]).get(args.delete))
        if listed is None or not store.delete_replay(args.delete):
            raise ReplayError(f"no saved replay {args.delete} in {args.db}; see --list")
    finally:
        store.close()
    if args.json:
        print(json.dumps({"deleted": listed}))
    else:
        print(f"deleted replay {args.delete}"
              + (f' "{listed["title"]}"' if listed["title"] else "")
              + f" ({listed['created']}; {listed['selected']}; "
              f"{', '.join(listed['versions'])})")
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
                ("--requests", args.requests != REQUEST_SAMPLE),
                ("--title", args.title)) if value]
            if ignored:
                does = ("--list reads saved ones as they were judged" if args.list
                        else "--show reads saved ones as they were judged"
                        if args.show is not None else "--delete removes a saved one")
                raise ReplayError(f"{', '.join(ignored)} "
                                  f"{'shape' if len(ignored) > 1 else 'shapes'} a new replay; "
                                  f"{does}")
            return _saved(args)
        if args.since is not None and args.until is not None and args.since > args.until:
            raise ReplayError(f"--since ({_local(args.since)}) is after --until "
                              f"({_local(args.until)}); no capture lies between them")
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
        located = _locations(store, args.versions, args.provider)
        for location, name in located:
            targets.append(open_target(location, provider=args.provider, name=name))
        _name_apart(targets, store)
        if args.versions:
            # Named twice by the person, both are replayed (a copy against its original is
            # a fair check of timing noise); said, as the registry's twins are.
            for ks, sha in _twins(located, store, args.provider):
                first, *again = (targets[k].name for k in ks)
                print(f"probescope: {', '.join(again)} {'is' if len(again) == 1 else 'are'} "
                      f"{first} again (the same model, sha256 {sha[:12]}…); replaying each as "
                      f"asked, though they answer alike and bisect credits {first}",
                      file=sys.stderr)
        try:
            result = _replay_interruptibly(
                lambda cancelled: replay(cases, targets, selection=selection,
                                         batch_size=args.batch_size, criteria=criteria,
                                         progress=_progress_printer(len(targets)),
                                         cancelled=cancelled, requests=args.requests))
        except KeyboardInterrupt:  # a second Ctrl+C as the replay ended
            print("probescope: stopped; nothing saved", file=sys.stderr, flush=True)
            raise
        finally:
            if sys.stderr.isatty():
                print(file=sys.stderr)  # end the progress line
        result.failures_matched = max(matched, failures)  # captures may land meanwhile
        result.versions_asked = len(targets)
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
        print(f"probescope: {_stopped_after(result, len(targets))}"
              + ("; the finished ones are saved" if not (args.no_save or not_saved) else ""),
              file=sys.stderr)
        return 130
    silent = [(s, r) for s, r in zip(summaries, result.runs, strict=True) if s.unanswered]
    for s, r in silent:
        if "://" not in r.location:
            # A local model that cannot take these inputs: asking again will not change it.
            print(f"probescope: {s.version} could not be asked about {s.unanswered} of "
                  f"{s.cases} cases: {s.unanswered_reason}", file=sys.stderr)
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


def _replay_interruptibly(work: Callable[[Callable[[], bool]], ReplayResult]) -> ReplayResult:
    """``work(cancelled)`` on a thread of its own, the main thread waiting on it. Python runs
    a signal handler on the main thread between bytecodes only: were the replay there, a
    Ctrl+C would wait for the inference call under way (seconds, for a big model) and two
    would merge into one. Here the first sets ``cancelled`` (the replay stops after the batch
    under way, keeping the versions it finished) and says so at once; the second ends the
    process at once (``_leave_now``), saving nothing, while the thread is still at work."""
    interrupted = threading.Event()

    def on_sigint(*_: object) -> None:
        if interrupted.is_set():  # asked twice: stop now, whatever is under way
            raise KeyboardInterrupt
        interrupted.set()
        print(("\n" if sys.stderr.isatty() else "")  # off the progress line
              + "probescope: stopping after the batch under way; Ctrl+C again stops at "
              "once, saving nothing", file=sys.stderr, flush=True)

    done: list[ReplayResult] = []
    failed: list[BaseException] = []
    # Not Thread.join: a KeyboardInterrupt inside it marks a running thread as ended
    # (bpo-45274), and the exit below must know that the thread is still at work.
    ended = threading.Event()

    def body() -> None:
        try:
            done.append(work(interrupted.is_set))
        except BaseException as exc:  # handed to the main thread, which reports it
            failed.append(exc)
        finally:
            ended.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        threading.Thread(target=body, name="replay", daemon=True).start()
        while not ended.wait(0.2):  # short waits: the handler runs between them anywhere
            pass
    except KeyboardInterrupt:
        if not ended.is_set():
            _leave_now()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if failed:
        raise failed[0]
    return done[0]


def _leave_now() -> NoReturn:
    """Exit 130 at once, the replay thread still inside an inference call. An ordinary exit
    would run onnxruntime's static destructors under that call, which aborts the process
    (SIGABRT, "terminate called without an active exception"). Nothing is lost: the
    workspace is written only once the replay has ended."""
    with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to tell
        print("probescope: stopped; nothing saved", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)
