"""Errors that reach users.

Every problem with user input becomes a :class:`UserError` that names where it is (the file, or
the command line, or the model factory), the field path (``layers[2].fan_in``) and what was
expected. The CLI prints it as one paragraph and exits 2, in one place (``cli.user_errors``). The
kinds: :class:`SpecError` for the architecture spec (and anything derived from it),
:class:`UsageError` for options and arguments, :class:`DeviceError` for the device asked for,
:class:`FactoryError` for a user's model factory (``--model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DeviceError", "FactoryError", "Problem", "SpecError", "UsageError", "UserError", "format_path", "lookup",
]

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: object, what: str) -> T:
    """``registry[name]``, or a ValueError that lists the known names (``what``: "optimizer")."""
    try:
        return registry[name]  # type: ignore[index]
    except (KeyError, TypeError):
        known = ", ".join(registry)
        raise ValueError(f"unknown {what} {name!r}; expected one of: {known}") from None


def format_path(loc: Sequence[str | int]) -> str:
    """``("layers", 2, "fan_in")`` -> ``"layers[2].fan_in"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what was expected there."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where = f"{where} (line {self.line})" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class UserError(ValueError):
    """Bad input from the user: one paragraph, exit code 2.

    ``source`` is where it came from (a file, ``"<dict>"`` for specs given as Python data,
    ``"command line"``, ``"--model"``); ``problems`` lists each finding with its field path.
    """

    def __init__(self, problems: Sequence[Problem] | str, *, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        super().__init__(self._render())

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled whole (problems and source), as a worker process or a Ray task raises it."""
        return (_rebuild, (type(self), self.problems, self.source))

    def with_source(self, source: str) -> UserError:
        return type(self)(self.problems, source=source)

    @property
    def path(self) -> str:
        return self.problems[0].path if self.problems else ""

    def _render(self) -> str:
        shown = [str(p) for p in self.problems[:5]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"and {more} more problem{'s' if more > 1 else ''}")
        head = f"{self.source}: " if self.source else ""
        return printable(head + "; ".join(shown))


def printable(text: str) -> str:
    """``text`` with control characters (a terminal's escape codes from a spec's keys, say) written
    as ``\\x1b`` escapes, so an error message can never drive the terminal it is printed on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class SpecError(UserError):
    """Bad architecture spec, or bad arguments derived from it (widths that do not fit it)."""


class UsageError(UserError):
    """A bad command-line option or library argument (``--widths``, ``--steps``, ``--lr``, ...)."""


class DeviceError(UserError):
    """The device asked for is not there (``--device cuda`` without CUDA)."""


class FactoryError(UserError):
    """A user's model factory (``--model module:function``) cannot be imported, fails, or returns
    something that is not the model the spec describes."""


def _rebuild(kind: type[UserError], problems: Sequence[Problem], source: str | None) -> UserError:
    return kind(problems, source=source)
