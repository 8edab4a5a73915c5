"""Passwords kept out of URLs: a URL given on a command line is in every process listing of the
machine (ps, /proc/<pid>/cmdline), in shell histories and in job schedulers' logs."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def has_password(url: str) -> bool:
    """Whether url carries a password: user:password@host, or libpq's ?password=..."""
    parts = urlsplit(url)
    # .password reads the userinfo alone, so a URL whose port is no number still answers.
    return bool(parts.password) or "password" in parse_qs(parts.query)
