"""Logging: transitions, not attempts (Knative's log spam was a top complaint).

One line per container transition; while a container keeps failing, a summary
at most every SUMMARY_EVERY seconds; never a line per attempt.

    logger = setup_logging("json")
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
from sidecar.runtime.state import AggregateState, Clock, ContainerState, StateObserver, Transition

SUMMARY_EVERY = 5.0  # seconds between "N failures" summaries per failing container


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


def setup_logging(log_format: str = "text", level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def _word(ready: bool) -> str:
    return "ready" if ready else "not ready"


@dataclass(slots=True)
class _FailureRun:
    count: int = 0  # failures
    errors: int = 0  # errored attempts, which count for nothing (Outcome.ERROR)
    window_start: float = 0.0
    last_message: str = ""


class TransitionLogger(StateObserver):
    def __init__(self, logger: logging.Logger, clock: Clock) -> None:
        self.logger = logger
        self.clock = clock
        self._runs: dict[str, _FailureRun] = {}

    def attempt_recorded(self, container: ContainerState, result: ProbeResult, lateness: float) -> None:
        name = container.spec.name
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
        if elapsed >= SUMMARY_EVERY:
            errored = f" ({run.errors} more errored, not counted)" if run.errors else ""
            self.logger.warning(
                "%s: %d failures%s in %s, last: %s", name, run.count, errored, format_duration(elapsed),
                run.last_message,
                extra={"fields": {"container": name, "failures": run.count, "errors": run.errors,
                                  "window_seconds": round(elapsed, 3), "last": run.last_message}},
            )
            run.count, run.errors, run.window_start = 0, 0, now

    def container_changed(self, container: ContainerState, transition: Transition) -> None:
        old, new = _word(not transition.now_ready), _word(transition.now_ready)
        self.logger.info(
            "%s: %s -> %s after %s (%s)", transition.container, old, new,
            format_duration(transition.held_for), transition.reason,
            extra={"fields": {"container": transition.container, "from": old, "to": new,
                              "reason": transition.reason,
                              "held_for_seconds": round(transition.held_for, 6)}},
        )

    def aggregate_changed(self, state: AggregateState) -> None:
        word = _word(state.ready)
        self.logger.info("pod: %s", word, extra={"fields": {"aggregate": word}})

    def draining_changed(self, state: AggregateState) -> None:
        word = "draining" if state.draining else "drain reset"
        self.logger.info("pod: %s", word, extra={"fields": {"draining": state.draining}})
