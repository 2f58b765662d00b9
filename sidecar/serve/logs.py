"""Logging: transitions, not attempts (Knative's log spam was a top complaint).

One line per container transition and per change of the pod's state; while a container
keeps failing, a summary that backs off (5 s, 30 s, then every 5 min, afresh after each
transition); never a line per attempt. States are spelt as every surface spells them
(sidecar.model: ready, not_ready, draining).

    logger = setup_logging("json", "info")
    state.observe(TransitionLogger(logger, clock))
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

from probes.result import ProbeResult
from sidecar.contract import LOGGER_NAME
from sidecar.durations import format_duration
from sidecar.model import DRAINING, readiness_word
from sidecar.runtime.state import AggregateState, Clock, ContainerState, StateObserver, Transition

# Seconds between failure summaries of one container that keeps failing: the first soon
# (is it a blip?), then ever rarer, so a container failing all day writes a line per 5
# minutes, not 720 an hour. The last gap repeats; a transition starts over from the first.
SUMMARY_BACKOFF = (5.0, 30.0, 300.0)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        return json.dumps(doc, separators=(",", ":"))


def setup_logging(log_format: str = "text", level: str | int = logging.INFO) -> logging.Logger:
    """The sidecar's logger with its one handler on stderr; `level` is a --log-level name (or a logging int)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return logger


@dataclass(slots=True)
class _FailureRun:
    """One container's consecutive failures since its last success or transition."""

    window_start: float
    count: int = 0  # failures
    errors: int = 0  # errored attempts, which count for nothing (Outcome.ERROR)
    last_message: str = ""
    summaries: int = 0  # logged so far in this run: picks the next gap from SUMMARY_BACKOFF

    @property
    def gap(self) -> float:
        return SUMMARY_BACKOFF[min(self.summaries, len(SUMMARY_BACKOFF) - 1)]


class TransitionLogger(StateObserver):
    def __init__(self, logger: logging.Logger, clock: Clock) -> None:
        self.logger = logger
        self.clock = clock
        self._runs: dict[str, _FailureRun] = {}
        # --log-level debug: a line whenever a container's result changes, read once (the hot path).
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._last_results: dict[str, tuple[str, str]] = {}

    def _debug_result(self, name: str, result: ProbeResult) -> None:
        seen = (result.outcome.value, result.message)
        if self._last_results.get(name) != seen:
            self._last_results[name] = seen
            self.logger.debug(
                "%s: attempt %s: %s", name, *seen,
                extra={"fields": {"container": name, "result": seen[0], "message": seen[1]}},
            )

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        name = container.spec.name
        if self._debug:
            self._debug_result(name, result)
        if result.outcome.ok:
            self._runs.pop(name, None)
            return
        now = self.clock.monotonic()
        run = self._runs.get(name)
        if run is None:
            run = self._runs[name] = _FailureRun(window_start=now)
        if result.outcome.conclusive:
            run.count += 1
        else:
            run.errors += 1
        run.last_message = result.message
        elapsed = now - run.window_start
        if elapsed >= run.gap:
            run.summaries += 1
            # An optional container never holds the pod out of service: its failures are news, not trouble.
            level = logging.WARNING if container.spec.required else logging.INFO
            errored = f" ({run.errors} more errored, not counted)" if run.errors else ""
            self.logger.log(
                level, "%s: %d failures%s in %s, last: %s; next summary in %s if it keeps failing",
                name, run.count, errored, format_duration(elapsed), run.last_message, format_duration(run.gap),
                extra={"fields": {"container": name, "status": container.status, "failures": run.count,
                                  "errors": run.errors, "window_seconds": round(elapsed, 3),
                                  "last": run.last_message, "next_summary_seconds": run.gap}},
            )
            run.count, run.errors, run.window_start = 0, 0, now

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        # The backoff starts over: the first summary after a transition comes SUMMARY_BACKOFF[0] later.
        self._runs.pop(transition.container, None)
        old, new = readiness_word(not transition.now_ready), readiness_word(transition.now_ready)
        self.logger.info(
            "%s: %s -> %s after %s (%s)", transition.container, old, new,
            format_duration(transition.held_for), transition.reason,
            extra={"fields": {"container": transition.container, "from": old, "to": new,
                              "reason": transition.reason,
                              "held_for_seconds": round(transition.held_for, 6)}},
        )

    def aggregate_changed(self, state: AggregateState) -> None:
        if state.draining:
            return  # "pod: draining" said it already: a draining pod is never ready
        word = readiness_word(state.ready)
        self.logger.info("pod: %s", word, extra={"fields": {"pod": word}})

    def draining_changed(self, state: AggregateState) -> None:
        if state.draining:
            self.logger.info("pod: %s", DRAINING, extra={"fields": {"pod": DRAINING, "draining": True}})
        else:
            # Only a preStop hook without a SIGTERM after it ends a drain (runtime.drain); the
            # pod's state after it follows from aggregate_changed, once the state has it.
            self.logger.info("pod: drain reset: no SIGTERM followed the preStop hook",
                             extra={"fields": {"draining": False}})
