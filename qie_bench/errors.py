"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserInputError(Exception):
    """Bad input: names where it is (file, key or case) and how to fix it.

    ``str(err)`` is the one line the CLI prints; never a traceback.
    """

    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str | None = None) -> None:
        self.where, self.problem, self.fix = where, problem, fix
        line = f"{where}: {problem}"
        if fix:
            line += f" ({fix})"
        super().__init__(line)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean …' hint for a misspelt key or name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
