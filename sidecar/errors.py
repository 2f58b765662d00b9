"""The one error type a user can cause, and where a value came from, so any problem becomes one line.

User input ends up quoted inside those lines; `quote` keeps it printable and short
so a hostile or binary value can neither break the line nor the terminal.

    ctx = ErrorContext("pod.yaml", "Deployment/web").within('container "app"')
    raise ctx.error("readinessProbe.httpGet.port", 'named port "http" not found in ports')
    # pod.yaml: Deployment/web: container "app": readinessProbe.httpGet.port: named port ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass


class ConfigError(Exception):
    """A user mistake in config, flags or a manifest.

    It renders as one line naming where it came from, so the CLI can print it and
    exit 2 without a traceback:

        raise ConfigError("pod.yaml", 'Deployment/web: container "app"',
                          "readinessProbe.httpGet.port", 'named port "http" not found in ports')
        # pod.yaml: Deployment/web: container "app": readinessProbe.httpGet.port: named port ...
    """

    def __init__(self, source: str, where: str = "", field: str = "", problem: str = "") -> None:
        self.source = source
        self.where = where
        self.field = field
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.where, self.field, self.problem) if p]
        return ": ".join(parts)


# difflib's own default: `li` is close to `lint` (0.67), `run` to `lint` is not (0.29).
_CLOSE_ENOUGH = 0.6
# Long enough for any sane name, URL or flag; short enough to keep the line readable.
MAX_QUOTED_CHARS = 120
# Keys and object names that read unambiguously unquoted: readinessProbe, web-1, a.io/b.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,252}")


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """`value` as a double-quoted, printable, single-line string of bounded length."""
    text = value if isinstance(value, str) else _repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():  # False for control characters and lone surrogates
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _repr(value: object) -> str:
    try:
        return repr(value)
    except RecursionError:  # a YAML list nested thousands deep
        return f"<deeply nested {type(value).__name__}>"


def one_line(text: str) -> str:
    """Collapse a multi-line message (a parser's, an OS error's) into one line."""
    return " ".join(text.split())


def cannot_listen(source: str, address: str, exc: OSError) -> ConfigError:
    """A port that can't be had (in use, an address not this host's, a name that won't resolve),
    as the one line `run` and `webhook` print: "--port 8443: cannot listen on [::]:8443: ...".

    The reason is the OS's own words for the errno, looked up through any OSError a server wrapped
    it in (asyncio rewords it, the gRPC port adds its name); a resolver's error has its own.
    """
    reason: OSError = exc
    while reason.errno is None and isinstance(reason.__cause__, OSError):
        reason = reason.__cause__
    # A resolver's errno (socket.gaierror) is negative: not the OS's, its strerror says it.
    text = os.strerror(reason.errno) if reason.errno and reason.errno > 0 else reason.strerror or str(reason)
    return ConfigError(source, problem=f"cannot listen on {address}: {one_line(text)}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The end of a one-line message, "; did you mean X?", or "" when no choice is close.

    X is a unique choice `word` begins, else difflib's nearest, compared case-insensitively
    (`periodseconds` still means `periodSeconds`). The choices are ours, so X is never quoted.

        "unknown option" + did_you_mean("timout", ("timeout", "period"))  # ...; did you mean timeout?
    """
    import difflib  # only ever on the way to an error message

    by_folded = {choice.lower(): choice for choice in choices}
    folded = word.lower()
    if not folded:
        return ""
    begun = [choice for key, choice in by_folded.items() if key.startswith(folded) and key != folded]
    if len(begun) == 1:
        return f"; did you mean {begun[0]}?"
    matches = difflib.get_close_matches(folded, by_folded, n=1, cutoff=_CLOSE_ENOUGH)
    return f"; did you mean {by_folded[matches[0]]}?" if matches else ""


def field_name(key: object) -> str:
    """A mapping key (or an object name) for a message: bare if plain, else quoted."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return quote(key)


def join_field(prefix: str, rest: str) -> str:
    """Join field paths: ("readinessProbe", "httpGet.port"), ("ports", "[0].name")."""
    if not prefix:
        return rest
    if not rest:
        return prefix
    return prefix + rest if rest.startswith("[") else f"{prefix}.{rest}"


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """The source (file, flag, env var) and the object inside it that a value belongs to."""

    source: str
    where: str = ""

    def within(self, more: str) -> ErrorContext:
        return ErrorContext(self.source, f"{self.where}: {more}" if self.where else more)

    def error(self, field: str = "", problem: str = "") -> ConfigError:
        return ConfigError(self.source, self.where, field, problem)

    def message(self, field: str = "", problem: str = "") -> str:
        """The same one line as `error`, for warnings."""
        return str(self.error(field, problem))


def type_words(value: object) -> str:
    """The YAML/JSON type of `value`, for "expected a list, got a string"."""
    if value is None:
        return "null"
    for kind, words in (
        (bool, "a boolean"),  # before int: bool is an int subclass
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "a mapping"),
        (list, "a list"),
    ):
        if isinstance(value, kind):
            return words
    return type(value).__name__
