"""Bearer tokens for the agent and its probe: read from a file or the environment, compared in
constant time, never logged. Thread: any.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_ENV = "PROBESCOPE_AGENT_TOKEN"
MIN_TOKEN_CHARS = 16


class TokenError(Exception):
    """No usable token; the message says where one is looked for and how to make one."""


def read_token(token_file: str | Path | None = None, env: str = TOKEN_ENV, *,
               file_hint: str = "--token-file PATH") -> str:
    """The token from ``token_file`` if given, else from the environment variable ``env``.

    A file readable by group or others still works, with a warning, because refusing would
    break a running deployment; the warning says how to fix it.
    """
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenError(f"cannot read token file {path}: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by group or others; run: chmod 600 %s",
                        path, path)
        token = text.strip()
        if not token:
            raise TokenError(f"token file {path} is empty")
    else:
        token = os.environ.get(env, "").strip()
        if not token:
            raise TokenError(f"no token: give {file_hint} (a 0600 file) or set {env}. "
                             "Make one with: python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\" > token && chmod 600 token")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"the token is too short ({len(token)} characters); "
                         f"use at least {MIN_TOKEN_CHARS}, e.g. secrets.token_urlsafe(32)")
    if any(c.isspace() for c in token):
        raise TokenError("the token must not contain spaces or line breaks")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """True when an Authorization header carries exactly this bearer token (constant time)."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
