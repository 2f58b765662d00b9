"""The `--probe NAME=SPEC[;option=value...]` flag: one container in one word.

    web=http://:8080/ready;timeout=500ms;header=Host:example.com
    db=tcp://127.0.0.1:5432;period=2s;failure=5
    api=grpc://:9090/my.Service;required=false
    cache=exec:redis-cli -p 6379 ping;timeout=2s

SPEC is an `http://`, `https://`, `tcp://` or `grpc://` URL, or `exec:` followed by
a command line split as a POSIX shell splits words (no shell runs it). An empty
host means 127.0.0.1 (the pod IP with --probe-host pod-ip); http and https default to ports 80 and 443, tcp and grpc
need one. Options come last: an exec command may itself contain `;`, so options
are taken from the end only while the tail looks like `;known_option=value`.
Option values cannot contain `;`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace

from probes.spec import DEFAULT_HOST, ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.names import check_container_name
from sidecar.config.schema import INT32_MAX, MAX_PORT
from sidecar.config.wire_text import host_problem, is_header_name, is_header_value, is_host, is_path
from sidecar.durations import parse_duration
from sidecar.errors import ErrorContext, did_you_mean, quote
from sidecar.model import ContainerSpec, ProbeTiming

FLAG_SOURCE = "--probe"
OPTIONS = ("timeout", "period", "failure", "success", "delay", "required", "header")
_OPTION = re.compile(r"\s*(?P<key>" + "|".join(OPTIONS) + r")=(?P<value>.*)", re.S)
# What a misspelt option looks like (`;timout=2s`), as opposed to a `;` inside a
# command or path. Quotes and spaces mean it is part of a command line.
_OPTION_LIKE = re.compile(r"\s*(?P<key>[A-Za-z_][\w-]*)=[^\s\"']*", re.S)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES_HINT = "use http, https, tcp, grpc or exec:"
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def flag_context(flag: str) -> ErrorContext:
    """Errors about one flag name it as the user typed it: `--probe "web=..."`."""
    return ErrorContext(f"{FLAG_SOURCE} {quote(flag)}")


def parse_probe_flag(flag: str, *, default_host: str = DEFAULT_HOST) -> ContainerSpec:
    """One `--probe` value as a ContainerSpec, an empty host meaning `default_host`; ConfigError for any mistake."""
    ctx = flag_context(flag)
    name, sep, spec = flag.partition("=")
    if not sep:
        raise ctx.error("", "expected NAME=SPEC, e.g. web=http://:8080/ready")
    check_container_name(name, ctx, "")
    target, options = _split_options(spec, ctx)
    handler = _handler(target, ctx, default_host)
    settings = _Settings()
    for key, value in options:
        settings.apply(key, value, ctx, handler)
    if settings.headers:
        assert isinstance(handler, HttpGetSpec)  # apply() refused headers elsewhere
        handler = replace(handler, headers=tuple(settings.headers))
    return ContainerSpec(
        name=name,
        handler=handler,
        timing=settings.timing,
        required=settings.required,
    )


def _split_options(spec: str, ctx: ErrorContext) -> tuple[str, list[tuple[str, str]]]:
    options: list[tuple[str, str]] = []
    rest = spec
    while True:
        head, sep, tail = rest.rpartition(";")
        option = _OPTION.fullmatch(tail) if sep else None
        if option is None:
            break
        options.append((option["key"], option["value"].strip()))
        rest = head
    if sep and (unknown := _OPTION_LIKE.fullmatch(tail)):
        hint = did_you_mean(unknown["key"], OPTIONS)
        raise ctx.error("", f"unknown option {quote(unknown['key'])} (options: {', '.join(OPTIONS)}){hint}")
    options.reverse()
    return rest, options


def _handler(target: str, ctx: ErrorContext, default_host: str) -> HandlerSpec:
    if target[:5].lower() == "exec:":
        return _exec(target[5:], ctx)
    scheme, sep, rest = target.partition("://")
    if not sep:
        raise ctx.error("", f"expected SCHEME://HOST:PORT or exec:COMMAND ({_SCHEMES_HINT})")
    scheme = scheme.lower()
    if scheme not in ("http", "https", "tcp", "grpc"):
        raise ctx.error("", f"unknown scheme {quote(scheme)} ({_SCHEMES_HINT})")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    written, port = _host_port(netloc, ctx, _DEFAULT_PORTS.get(scheme), scheme)
    host = written or default_host
    if scheme in ("http", "https"):
        path = tail if tail.startswith("/") else "/" + tail
        if not is_path(path) or " " in path:
            raise ctx.error("", "the path must not contain spaces or control characters")
        return HttpGetSpec(port=port, path=path, host=host, scheme=scheme, host_defaulted=not written)
    if scheme == "tcp":
        if tail not in ("", "/"):
            raise ctx.error("", f"tcp:// takes no path, got {quote(tail)}")
        return TcpSocketSpec(port=port, host=host, host_defaulted=not written)
    if tail and not tail.startswith("/"):
        raise ctx.error("", f"grpc:// takes an optional /service, got {quote(tail)}")
    if not is_path(tail) or " " in tail:
        raise ctx.error("", "the service must not contain spaces or control characters")
    return GrpcSpec(port=port, service=tail[1:], host=host)


def _host_port(netloc: str, ctx: ErrorContext, default_port: int | None, scheme: str) -> tuple[str, int]:
    """(host, port) of `netloc`: the host "" when none is given, the port `default_port`."""
    if "@" in netloc:
        raise ctx.error("", "user info (user@host) is not supported")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ctx.error("", "missing ] after an IPv6 address")
        host, after = netloc[1:end], netloc[end + 1 :]
        if after and not after.startswith(":"):
            raise ctx.error("", f"expected :PORT after ], got {quote(after)}")
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
        if ":" in host:
            raise ctx.error("", "put an IPv6 address in brackets: [::1]:8080")
    if not is_host(host):
        raise ctx.error("", "the host must not contain spaces, '[]@?#' or control characters")
    if host and (problem := host_problem(host)) is not None:
        raise ctx.error("", f"the host {quote(host)} {problem}")
    if not port_text:
        if default_port is None:
            raise ctx.error("", f"{scheme}:// needs a port, e.g. {scheme}://127.0.0.1:8080")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise ctx.error("", f"port must be a number between 1 and {MAX_PORT}, got {quote(port_text)}")
    port = int(port_text)
    if not 1 <= port <= MAX_PORT:
        raise ctx.error("", f"port must be a number between 1 and {MAX_PORT}, got {port}")
    return host, port


def _exec(command_line: str, ctx: ErrorContext) -> ExecSpec:
    try:
        argv = shlex.split(command_line)
    except ValueError as err:  # "No closing quotation", "No escaped character"
        raise ctx.error("", f"exec: {err}") from None
    if not argv or not argv[0]:
        raise ctx.error("", "exec: needs a command, e.g. exec:cat /tmp/healthy")
    if any("\x00" in arg for arg in argv):
        raise ctx.error("", "exec: the command must not contain NUL characters")
    return ExecSpec(command=tuple(argv))


@dataclass
class _Settings:
    """Options as they are read; turned into ProbeTiming and `required` at the end."""

    timing: ProbeTiming = field(default_factory=ProbeTiming)
    required: bool = True
    headers: list[tuple[str, str]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def apply(self, key: str, value: str, ctx: ErrorContext, handler: HandlerSpec) -> None:
        if key in self.seen and key != "header":
            raise ctx.error(key, "given twice")
        self.seen.add(key)
        if key == "header":
            self.headers.append(_header(value, ctx, handler))
        elif key == "required":
            self.required = _boolean(value, ctx, key)
        elif key == "success":
            self.timing = replace(self.timing, success_threshold=_count(value, ctx, key))
        elif key == "failure":
            self.timing = replace(self.timing, failure_threshold=_count(value, ctx, key))
        elif key == "timeout":
            timeout = _seconds(value, ctx, key)
            if timeout == 0:
                raise ctx.error(key, "must be more than 0")
            self.timing = replace(self.timing, timeout=timeout)
        elif key == "period":
            self.timing = replace(self.timing, period=_seconds(value, ctx, key))
        else:
            self.timing = replace(self.timing, initial_delay=_seconds(value, ctx, key))


def _header(value: str, ctx: ErrorContext, handler: HandlerSpec) -> tuple[str, str]:
    if not isinstance(handler, HttpGetSpec):
        raise ctx.error("header", "only http:// and https:// probes send headers")
    name, sep, header_value = value.partition(":")
    name, header_value = name.strip(), header_value.strip()
    if not sep or not is_header_name(name):
        raise ctx.error("header", f"expected Name:Value, got {quote(value)}")
    if not is_header_value(header_value):
        raise ctx.error("header", "the value must not contain CR, LF or NUL")
    return name, header_value


def _boolean(value: str, ctx: ErrorContext, key: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ctx.error(key, f"expected true or false, got {quote(value)}")


def _count(value: str, ctx: ErrorContext, key: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or not 1 <= int(value) <= INT32_MAX:
        raise ctx.error(key, f"expected a whole number from 1 to {INT32_MAX}, got {quote(value)}")
    return int(value)


def _seconds(value: str, ctx: ErrorContext, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as err:
        raise ctx.error(key, str(err)) from None
    # Beyond what the kubelet's int32 seconds can say, and beyond what timers like.
    if not seconds <= INT32_MAX:
        raise ctx.error(key, f"duration {quote(value)} is too long (at most {INT32_MAX}s)")
    return seconds
