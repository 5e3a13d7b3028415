"""What an export may replace: a file the user names for a CSV, a PDF or an HTML report can
already hold something else (the workspace, a model, a device). Only a file that starts the
way our own output of that kind starts is replaced; anything else is refused before any work.
"""

from __future__ import annotations

from pathlib import Path


def refusal(out: Path, starts: tuple[bytes, ...], kind: str) -> str | None:
    """Why ``out`` must not be replaced by a new ``kind`` file, or None when it may (missing,
    empty, or an earlier one: its first bytes are one of ``starts``, compared ignoring case
    and leading white space)."""
    if not out.exists():
        return None
    target = out.resolve()
    if target.is_dir():
        return f"cannot write {out}: it is a folder; give a file name"
    if not target.is_file():
        return f"cannot write {out}: it is not a regular file"
    if any(target.with_name(target.name + end).exists() for end in ("-wal", "-shm")):
        # A database in use (this process's workspace, say): not even read, since closing a
        # file this process holds SQLite locks on drops them all.
        return f"{out} is a database in use; give a new file name (nothing was overwritten)"
    try:
        with target.open("rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError as exc:
        return f"cannot write {out}: {exc.strerror}"
    if head and not any(head.startswith(s.lower()) for s in starts):
        return f"{out} exists and is not {kind}; give a new file name (nothing was overwritten)"
    return None
