"""The `--probe NAME=SPEC;options` syntax."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.spec import ExecSpec, GrpcSpec, HandlerSpec, HttpGetSpec, TcpSocketSpec
from sidecar.config.quick_probe import OPTIONS, parse_probe_flag
from sidecar.errors import ConfigError
from sidecar.model import ProbeTiming


@pytest.mark.parametrize(
    ("flag", "handler"),
    [
        ("web=http://:8080/ready", HttpGetSpec(port=8080, path="/ready")),
        ("web=http://localhost", HttpGetSpec(port=80, path="/", host="localhost")),
        ("web=HTTPS://example.internal?x=1", HttpGetSpec(443, "/?x=1", "example.internal", "https")),
        ("web=http://[::1]:81/a;b", HttpGetSpec(port=81, path="/a;b", host="::1")),
        ("db=tcp://127.0.0.1:5432", TcpSocketSpec(port=5432)),
        ("db=tcp://db.local:5432/", TcpSocketSpec(port=5432, host="db.local")),
        ("api=grpc://:9090", GrpcSpec(port=9090)),
        ("api=grpc://[::1]:9090/my.pkg.Service", GrpcSpec(9090, "my.pkg.Service", "::1")),
        ("c=exec:cat /tmp/healthy", ExecSpec(("cat", "/tmp/healthy"))),
        # A `;` inside the command stays there: only a known option is taken from the end.
        ("c=exec:sh -c 'test -f /a; test -f /b'", ExecSpec(("sh", "-c", "test -f /a; test -f /b"))),
        ('c=exec:sh -c "a;b=1"', ExecSpec(("sh", "-c", "a;b=1"))),
    ],
)
def test_spec_forms(flag: str, handler: HandlerSpec) -> None:
    spec = parse_probe_flag(flag)
    assert (spec.name, spec.handler, spec.timing, spec.required) == (
        flag.partition("=")[0],
        handler,
        ProbeTiming(),
        True,
    )


def test_options_set_timing_required_and_headers_in_order() -> None:
    spec = parse_probe_flag(
        "web=http://:80/;timeout=500ms;period=0;failure=5;success=2;delay=1.5"
        ";required=false;header=Host: example.com;header=X-Trace:a:b"
    )
    assert spec.timing == ProbeTiming(
        initial_delay=1.5, timeout=0.5, period=0, success_threshold=2, failure_threshold=5
    )
    assert spec.required is False
    assert spec.handler == HttpGetSpec(port=80, headers=(("Host", "example.com"), ("X-Trace", "a:b")))


def test_exec_command_keeps_semicolons_and_takes_trailing_options() -> None:
    spec = parse_probe_flag("c=exec:sh -c 'a; b';timeout=2s;period=1s")
    assert spec.handler == ExecSpec(("sh", "-c", "a; b"))
    assert (spec.timing.timeout, spec.timing.period) == (2.0, 1.0)


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        ("web=htp://x:1", 'unknown scheme "htp" (use http, https, tcp, grpc or exec:)'),
        ("web", "expected NAME=SPEC, e.g. web=http://:8080/ready"),
        ("web=localhost:80", "expected SCHEME://HOST:PORT or exec:COMMAND (use http, https, tcp, grpc or exec:)"),
        ("=tcp://:1", "invalid container name \"\": use lower-case letters, digits and '-' (at most 63)"),
        ("Web=tcp://:1", "invalid container name \"Web\": use lower-case letters, digits and '-' (at most 63)"),
        ("db=tcp://host", "tcp:// needs a port, e.g. tcp://127.0.0.1:8080"),
        ("db=grpc://:", "grpc:// needs a port, e.g. grpc://127.0.0.1:8080"),
        ("db=tcp://:70000", "port must be a number between 1 and 65535, got 70000"),
        ("db=tcp://:0", "port must be a number between 1 and 65535, got 0"),
        ("db=tcp://:http", 'port must be a number between 1 and 65535, got "http"'),
        ("db=tcp://::1:80", "put an IPv6 address in brackets: [::1]:8080"),
        ("db=tcp://:80/x", 'tcp:// takes no path, got "/x"'),
        ("db=tcp://u@h:80", "user info (user@host) is not supported"),
        ("db=tcp://:80;timout=2s",
         'unknown option "timout" (options: ' + ", ".join(OPTIONS) + "); did you mean timeout?"),
        ("db=tcp://:80;timeout=2x", "timeout: bad duration '2x' (use e.g. 500ms, 2s, 1m)"),
        ("db=tcp://:80;timeout=0", "timeout: must be more than 0"),
        ("db=tcp://:80;period=1e400", "period: duration '1e400' must be a finite number >= 0"),
        ("db=tcp://:80;period=99999999999h", 'period: duration "99999999999h" is too long (at most 2147483647s)'),
        ("db=tcp://:80;timeout=1s;timeout=2s", "timeout: given twice"),
        ("db=tcp://:80;failure=0", 'failure: expected a whole number from 1 to 2147483647, got "0"'),
        ("db=tcp://:80;required=maybe", 'required: expected true or false, got "maybe"'),
        ("db=tcp://:80;header=A:b", "header: only http:// and https:// probes send headers"),
        ("w=http://:80;header=novalue", 'header: expected Name:Value, got "novalue"'),
        ("c=exec:", "exec: needs a command, e.g. exec:cat /tmp/healthy"),
        ("c=exec:sh -c 'unclosed", "exec: No closing quotation"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_naming_the_flag(flag: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_probe_flag(flag)
    assert str(caught.value) == f'--probe "{flag}": {problem}'


def test_unprintable_flag_is_quoted_safely() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_probe_flag("web=tcp://:1\n;\x1b[31m")
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


_PIECES = st.sampled_from([
    "web", "=", "http://", "https://", "tcp://", "grpc://", "exec:", ":", "[::1]", "127.0.0.1",
    "8080", "0", "70000", "/", "/ready", "?", "#", "@", ";", "timeout=", "period=", "failure=",
    "success=", "delay=", "required=", "header=", "2s", "500ms", "-1", "true", "X-A:b", "'", '"',
    " ", "\\", "\x00", "é", "1e999",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(_PIECES, max_size=14).map("".join)))
def test_any_flag_gives_a_spec_or_one_config_error(flag: str) -> None:
    try:
        spec = parse_probe_flag(flag)
    except ConfigError as err:
        assert "\n" not in str(err) and "\r" not in str(err)
    else:
        assert spec.handler is not None
