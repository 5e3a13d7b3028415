"""Builds a server's virtual environment once and caches it under ``.cache/servers/NAME``.

A marker file records the exact requirements it was built from; a different list rebuilds it.
An exclusive file lock lets parallel test sessions share one build. Thread: any (file locks).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PROBESCOPE_SERVER_CACHE", ROOT / ".cache" / "servers"))
BUILD_TIMEOUT_S = 900


class ServerUnavailable(RuntimeError):
    """A third-party server cannot be installed or started here; the message says why."""


def ensure_venv(name: str, requirements: Sequence[str],
                pip_args: Sequence[str] = ()) -> Path:
    """Path of a virtual environment holding ``requirements``; built on first use."""
    target = CACHE / name
    stamp = target / ".probescope-built"
    wanted = hashlib.sha256("\n".join([*requirements, "--", *pip_args]).encode()).hexdigest()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if stamp.is_file() and stamp.read_text().strip() == wanted:
            return target
        shutil.rmtree(target, ignore_errors=True)
        log.info("building %s (once; cached in %s)", name, target)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(target)], check=True,
                           capture_output=True, timeout=120)
            subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *pip_args, *requirements],
                           check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(target, ignore_errors=True)
            tail = " ".join(((exc.stderr or "") + (exc.stdout or "")).split()[-40:])
            raise ServerUnavailable(f"cannot install {' '.join(requirements)}: {tail}") from None
        except subprocess.TimeoutExpired:
            shutil.rmtree(target, ignore_errors=True)
            raise ServerUnavailable(f"installing {name} took over {BUILD_TIMEOUT_S} s") from None
        stamp.write_text(wanted)
        return target
