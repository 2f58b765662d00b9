"""Bad input, fuzzed: config files, `--probe` flags, Knative's env format and run settings.

tests/config/test_loader.py and tests/config/test_quick_probe.py already fuzz generic
structures and a soup of flag pieces. These add what they leave out:

- mutations of the project's real manifests (text edits a YAML parser and the loader
  must survive), so the inputs stay close to what people write;
- `--probe` flags and Knative probes built from their grammar, so most examples get
  deep into validation instead of failing at the first character;
- every source at once (flags, file and both env vars), merged;
- run settings, every field;
- and one property the loader must keep beyond "ConfigError or a config": every probe it
  accepts can be built and run, because a spec that only fails inside the sidecar is a
  traceback at start-up.

Each example is counted in the session's `fuzz_examples` tally (printed with -s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes import build_probe
from probes.spec import ExecSpec, HttpGetSpec
from sidecar.config.loader import load_config
from sidecar.config.schema import INT32_MAX
from sidecar.errors import ConfigError
from sidecar.model import SidecarConfig
from sidecar.runtime.settings import RunSettings
from tests.reliability.fuzz_inputs import CORPUS, EDIT_TEXT, EDITS, fuzz_examples_per_test, mutate

_FUZZ = settings(max_examples=fuzz_examples_per_test(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_loaded(call: object) -> SidecarConfig | None:
    """The loader's whole contract: one ConfigError line, or a config whose every probe builds."""
    assert callable(call)
    try:
        config = call()
    except ConfigError as err:
        assert str(err) and "\n" not in str(err) and "\r" not in str(err), repr(str(err))
        return None
    assert isinstance(config, SidecarConfig)
    names = [spec.name for spec in config.containers]
    assert len(names) == len(set(names))
    for spec in config.containers:
        timing = spec.timing
        assert math.isfinite(timing.timeout) and timing.timeout > 0, timing
        assert math.isfinite(timing.period) and timing.period >= 0, timing
        assert math.isfinite(timing.initial_delay) and timing.initial_delay >= 0, timing
        assert 1 <= timing.success_threshold <= INT32_MAX and 1 <= timing.failure_threshold <= INT32_MAX
        if spec.handler is None:
            continue
        if not isinstance(spec.handler, ExecSpec):
            assert 1 <= spec.handler.port <= 65535
        build_probe(spec.handler)  # must not raise: the sidecar builds every probe at start
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


def test_the_corpus_loads_unmutated() -> None:
    loaded = [check_loaded(lambda p=path: load_config(config_file=str(p), environ={})) for path in CORPUS]
    assert len(CORPUS) >= 5 and any(loaded)


@_FUZZ
@given(source=st.sampled_from(CORPUS), edits=EDITS)
def test_mutated_real_manifests_load_or_give_one_config_error(
    workdir: Path, fuzz_examples: Counter[str], source: Path, edits: list[tuple[float, int, str]]
) -> None:
    fuzz_examples["config file (mutated manifest)"] += 1
    path = workdir / "mutated.yaml"
    path.write_bytes(mutate(source.read_text(), edits).encode("utf-8", "surrogatepass"))
    check_loaded(lambda: load_config(config_file=str(path), environ={}))


# -- `--probe` from its grammar -----------------------------------------------------------------

_NAMES = st.one_of(st.sampled_from(["web", "db-1", "a", "x" * 63, "x" * 64, "Web", "-a", "a_b", ""]),
                   st.text(max_size=8))
_HOSTS = st.one_of(
    st.sampled_from(["", "127.0.0.1", "[::1]", "[::1", "::1", "localhost", "a b", "é.example", "[]", "[fe80::1%lo]",
                     "999.1.1.1", "host/x", "\t", "%00"]),
    st.text(max_size=6),
)
_PORTS = st.one_of(st.sampled_from(["", ":", ":0", ":1", ":65535", ":65536", ":08080", ":-1", ":\uff11\uff12", ":8080x",
                                    ":99999999999999999999", ":http"]),
                   st.integers(-5, 70000).map(lambda n: f":{n}"))
_PATHS = st.one_of(st.sampled_from(["", "/", "/ready", "/a b", "/%zz", "/?q=1#f", "/\x7f", "/é", "?x", "#x",
                                    "/svc.Health", "/" + "p" * 3000]),
                   st.text(max_size=8).map(lambda t: "/" + t))
_OPTION_KEYS = st.sampled_from(["timeout", "period", "failure", "success", "delay", "required", "header",
                                "timout", "TIMEOUT", ""])
_OPTION_VALUES = st.one_of(
    st.sampled_from(["1s", "0", "0s", "500ms", "1e400", "9" * 400 + "s", "-1", "nan", "inf", "1.5", "2147483647",
                     "2147483648", "true", "no", "X-A:b", "Host:", ":v", "A:\r\nB", "1h1m", "µs", "3us"]),
    st.text(max_size=6),
)
_OPTIONS = st.lists(st.tuples(_OPTION_KEYS, _OPTION_VALUES), max_size=4).map(
    lambda pairs: "".join(f";{key}={value}" for key, value in pairs)
)
_NETWORK_SPECS = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "tcp", "grpc", "HTTP", "ftp", ""]), _HOSTS, _PORTS, _PATHS,
)
_EXEC_SPECS = st.one_of(
    st.sampled_from(["exec:", "exec: ", "exec:cat /tmp/x", "exec:'unclosed", "exec:a\\", "EXEC:true",
                     "exec:sh -c 'a;b'", "exec:\x00", "exec:\"\""]),
    st.text(max_size=10).map(lambda t: "exec:" + t),
)
_FLAGS = st.builds(lambda name, spec, options: f"{name}={spec}{options}",
                   _NAMES, st.one_of(_NETWORK_SPECS, _EXEC_SPECS), _OPTIONS)


@_FUZZ
@given(flags=st.lists(_FLAGS, min_size=1, max_size=3))
def test_probe_flags_from_the_grammar_load_or_give_one_config_error(
    fuzz_examples: Counter[str], flags: list[str]
) -> None:
    fuzz_examples["--probe flags"] += 1
    config = check_loaded(lambda: load_config(probe_flags=flags, environ={}))
    if config is not None:
        for spec in config.containers:
            if isinstance(spec.handler, HttpGetSpec):
                assert spec.handler.target.startswith(spec.handler.scheme + "://")


# -- Knative's SERVING_READINESS_PROBE from corev1.Probe's shape --------------------------------

_K_PORTS = st.one_of(
    st.sampled_from([8080, "8080", " 8080", "+80", "0x50", "\uff18\uff10", "80.0", 80.0, 0, "0", -1, 65536, 2**63,
                     "", None, True, "http", [8080], {"port": 1}]),
    st.integers(-10, 70000),
)
_K_TIMING: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([0, 1, 5, -1, 2**31, 2**31 - 1, 1.5, "1", None, True, [], 10**30]), st.integers(-3, 100)
)
_K_HEADERS = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["Host", "X-A", "Bad Name", "", "Accept"]),
                                             "value": st.sampled_from(["v", "", "a\r\nb", "\x00", "é"])}),
                      max_size=3)
_K_HANDLERS = st.one_of(
    st.fixed_dictionaries({"httpGet": st.fixed_dictionaries(
        {"port": _K_PORTS},
        optional={"path": _PATHS, "host": _HOSTS, "scheme": st.sampled_from(["HTTP", "HTTPS", "http", "ftp", ""]),
                  "httpHeaders": _K_HEADERS})}),
    st.fixed_dictionaries({"tcpSocket": st.fixed_dictionaries({"port": _K_PORTS}, optional={"host": _HOSTS})}),
    st.fixed_dictionaries({"grpc": st.fixed_dictionaries({"port": _K_PORTS},
                                                         optional={"service": st.one_of(st.none(), _NAMES)})}),
    st.fixed_dictionaries({"exec": st.fixed_dictionaries({"command": st.one_of(
        st.lists(st.text(max_size=5), max_size=3), st.just(None), st.just("cat /x"))})}),
    st.just({}),
    st.just({"httpGet": {"port": 1}, "tcpSocket": {"port": 2}}),
)
_K_PROBES = st.builds(
    lambda handler, timing: {**handler, **timing},
    _K_HANDLERS,
    st.dictionaries(st.sampled_from(["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                                     "failureThreshold", "terminationGracePeriodSeconds", "bogusSeconds"]),
                    _K_TIMING, max_size=4),
)


@_FUZZ
@given(probes=st.one_of(_K_PROBES, st.lists(_K_PROBES, max_size=3)), spacing=st.sampled_from([None, 2]))
def test_knative_probes_from_their_shape_load_or_give_one_config_error(
    fuzz_examples: Counter[str], probes: object, spacing: int | None
) -> None:
    fuzz_examples["SERVING_READINESS_PROBE"] += 1
    text = json.dumps(probes, indent=spacing)
    config = check_loaded(lambda: load_config(environ={"SERVING_READINESS_PROBE": text}))
    if config is not None:
        count = len(probes) if isinstance(probes, list) else 1
        assert [spec.name for spec in config.containers] == [f"container-{i}" for i in range(count)]


# -- every source at once -----------------------------------------------------------------------


@_FUZZ
@given(flags=st.lists(_FLAGS, max_size=2), knative=_K_PROBES, source=st.sampled_from(CORPUS),
       edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), EDIT_TEXT), max_size=2))
def test_all_sources_merged_load_or_give_one_config_error(
    workdir: Path, fuzz_examples: Counter[str], flags: list[str], knative: object, source: Path,
    edits: list[tuple[float, int, str]],
) -> None:
    fuzz_examples["all sources merged"] += 1
    path = workdir / "merged.yaml"
    path.write_bytes(mutate(source.read_text(), edits).encode("utf-8", "surrogatepass"))
    containers_env = json.dumps({"containers": [{"name": "web", "readinessProbe": knative}]})
    environ = {"SERVING_READINESS_PROBE": json.dumps(knative), "READINESS_SIDECAR_CONFIG": containers_env}
    check_loaded(lambda: load_config(probe_flags=flags, config_file=str(path), environ=environ))


# -- run settings -----------------------------------------------------------------------------

_SETTING_VALUES = st.one_of(
    st.sampled_from(["0", "8550", "65535", "65536", "-1", "off", "OFF", "none", "", " ", "1ms", "0s", "1e400",
                     "9" * 400 + "s", "9" * 400, "nan", "inf", "-0", "1.5", "text", "json", "JSON", "::", "0.0.0.0",
                     "127.0.0.1", "1h", "0.000001us"]),
    st.text(max_size=8),
)


@_FUZZ
@given(raw=st.dictionaries(st.sampled_from(RunSettings.fields()), _SETTING_VALUES, max_size=5))
def test_run_settings_are_valid_and_finite_or_one_config_error(
    fuzz_examples: Counter[str], raw: dict[str, str]
) -> None:
    fuzz_examples["run settings"] += 1
    try:
        result = RunSettings.from_raw(raw)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith("--"), str(err)
        return
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    policy = result.aggressive
    values.update({f"aggressive.{f.name}": getattr(policy, f.name) for f in dataclasses.fields(policy)})
    for name, value in values.items():
        if isinstance(value, float):
            # An endless drain or period is a typo, not a setting: it must be refused.
            assert math.isfinite(value) and value >= 0, (name, value)
    assert result.aggressive.interval > 0 and result.aggressive.steady_period > 0


def test_an_endless_duration_setting_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        RunSettings.from_raw({"drain_seconds": "9" * 400 + "s"})
    assert str(caught.value).startswith("--drain-seconds: ")


@pytest.mark.parametrize("host", ["[x]", "[::1]", "[", "a]", "a?b", "a#b", "user@h"])
def test_a_host_that_is_url_syntax_is_a_config_error_not_a_crash_at_start(host: str) -> None:
    """Found by the fuzzing above: "[x]" loaded, then HttpGetProbe's URL parser raised at
    start-up; "a?b" or "user@h" silently probed another host."""
    probe = json.dumps({"httpGet": {"port": 8080, "host": host}})
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SERVING_READINESS_PROBE": probe})
    assert str(caught.value).startswith('SERVING_READINESS_PROBE: container "container-0": httpGet.host: ')


def test_accepted_probes_really_run(fuzz_examples: Counter[str]) -> None:
    """build_probe is only half of "can run": one attempt of each kind the grammar accepts, too."""
    config = load_config(probe_flags=["h=http://:1/x;timeout=50ms", "t=tcp://[::1]:1", "g=grpc://:1/svc",
                                      "e=exec:true"], environ={})

    async def attempt_all() -> list[str]:
        results = []
        for spec in config.containers:
            assert spec.handler is not None
            probe = build_probe(spec.handler)
            results.append((await probe.attempt(0.5)).message)
        return results

    messages = asyncio.run(attempt_all())
    assert messages[3] == "exit 0" and all(messages), messages
