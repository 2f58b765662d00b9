"""The sections of the suite (§1-§6, issue 13's goals): each runs its measurements, keeps raw
data for the JSON and adds rows to the one table, each figure beside its same-run baseline.

With a baseline revision (`python -m benchmarks --baseline-rev REV`), every figure of the
sidecar is measured on both installs, alternated within its section (baseline, this,
baseline, this: `Profile.ab_rounds` rounds, each with its share of the trials or of the
window), so both see the same noise; its row then also shows the baseline's figure and
this ÷ baseline for its headline numbers. The drivers' own figures (the kubelet, the floor,
bare aiohttp, `python -c pass`) are measured once, for both.

    suite = Suite(QUICK, workdir, progress=print, baseline=install)   # baseline optional
    await suite.detection()
    suite.rows, suite.data, suite.baseline_data, suite.before_after
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.aggressive_cost import AggressiveCost, aggressive_cost
from benchmarks.check_startup import PYTHON_ALONE, check_startup
from benchmarks.detection import DEFAULTS, DEFAULTS_ASYNCIO, QUEUE_PROXY, DetectionRun, Variant, sidecar_detection
from benchmarks.endpoint_load import HALVES, LoadRun, endpoint_load
from benchmarks.fanout import PROBE_SECONDS, FanoutFloor, FanoutRun, fanout, fanout_floor
from benchmarks.floor import FloorCost, floor_cost, floor_detection
from benchmarks.kubelet_baseline import kubelet_baseline
from benchmarks.overhead import SteadyOverhead, steady_overhead
from benchmarks.real_start import RealStartRun, real_start
from benchmarks.report import Row, change, times, verdict, verdict_parts
from benchmarks.sidecar_process import THIS_CHECKOUT, SidecarInstall, container, start_sidecar
from benchmarks.stats import Summary, fmt_ms, ratio, summarize
from benchmarks.targets import PROBE_KINDS, free_port_outside_ephemeral
from benchmarks.unready import FAILURE_THRESHOLD, KUBELET_PERIOD_SECONDS, unready_detection
from benchmarks.wrk_runner import wrk_available
from sidecar.runtime.scheduler import AggressivePolicy

# Goals, from issue 13 (they replace issue 7's).
GOAL_DETECTION_MS = {"http": (2.0, 5.0), "tcp": (2.0, 5.0), "grpc": (2.0, 5.0), "exec": (4.0, 8.0)}  # p50, p99
# CPU per not-ready container, percent of one core. A never-ready tcp target is a closed port,
# a never-ready http target answers 503.
GOAL_NOT_READY_CPU = {"tcp": 1.0, "http": 4.0}
GOAL_OVER_FLOOR = 1.5  # a closed port's CPU, at most this times the floor loop's at the same interval
GOAL_ROUND_MS = {100: 60.0, 1000: 100.0}  # fan-out round with 50 ms probes, for N up to the key
GOAL_STEADY_CPU = 0.5  # percent of one core, 4 ready containers (http, tcp, grpc, exec)
GOAL_RSS_MIB = 45.0  # 4 containers, every server on (the defaults); MiB, as ps, top and limits count
GOAL_CHECK_STARTUP_MS = 90.0  # `check --probe x=tcp://...`, wall-clock, median
GOAL_LOAD_RATIO = 0.9  # /ready under wrk against bare aiohttp
GOAL_LOAD_P99_MS = 4.0
# Issue 7's, which issue 13 leaves as it was: no probe more than 10 ms late during the flood.
LATE_GOAL = "none > 10 ms late"

# Read from the sidecar, not copied: the floor and the sweep follow the default if it moves.
DEFAULT_INTERVAL_MS = AggressivePolicy().interval * 1000.0
SWEEP_INTERVALS_MS = tuple(sorted({1.0, 2.0, 3.0, 10.0, DEFAULT_INTERVAL_MS}))
NOT_READY_KINDS = ("tcp", "http")
NOT_READY_WHAT = {"tcp": "port closed", "http": "HTTP 503"}
AGGRESSIVE_CONTAINERS = 4
LIGHT_KINDS = ("http", "tcp", "http", "tcp")  # the common pod: no grpc channel, no fork per attempt
# /proc counts CPU in 10 ms ticks: the steady goal (0.5%) needs a 10 s window to be read to 0.1%.
STEADY_WINDOW_FACTOR = 2
# One of each kind, all refused or quick: the warm-up's only job is to compile and load every module.
_WARM_UP_SECONDS = 0.5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    detection_trials: int  # per probe type, defaults, the loop the sidecar picks (uvloop if installed)
    asyncio_trials: int  # per probe type, defaults on the plain asyncio loop (§6)
    queue_proxy_trials: int  # per probe type
    kubelet_trials: int  # per probe type
    sweep_trials: int  # per probe type and interval other than the default
    sweep_cpu_seconds: float  # not-ready CPU window at intervals other than the default
    cpu_seconds: float  # not-ready CPU window at the default interval, where the goals are
    unready_per_mode: int  # containers per mode, each running trials in a loop
    unready_seconds: float
    wrk_seconds: float
    idle_jitter_seconds: float
    fanout_sizes: tuple[int, ...]
    steady_seconds: float
    floor_trials: int  # detection trials of the floor loop
    start_trials: int  # real-start trials, each with a fresh sidecar and port
    start_phase_seconds: float  # how long the port stays closed, then how long it answers 503
    check_runs: int  # `check` start-ups timed per install
    ab_rounds: int  # with a baseline, alternations per figure: 2 is baseline, this, baseline, this


# Sized to finish in about 5 minutes on 2 cores, about 10 with a baseline: the headline
# (defaults, 4 probe types) gets 200 trials each; comparisons get fewer, and say n beside every figure.
# CPU windows can be short: a meter reads them to the nanosecond (proc_usage.CpuMeter).
FULL = Profile(
    name="full", detection_trials=200, asyncio_trials=80, queue_proxy_trials=60, kubelet_trials=100,
    sweep_trials=30, sweep_cpu_seconds=1.0, cpu_seconds=3.0, unready_per_mode=8, unready_seconds=9.0,
    wrk_seconds=10.0, idle_jitter_seconds=2.0, fanout_sizes=(1, 10, 100, 1000), steady_seconds=5.0,
    floor_trials=200, start_trials=4, start_phase_seconds=2.0, check_runs=20, ab_rounds=2,
)
# One round with a baseline (baseline, then this): a smoke run of the comparison, not a measurement.
QUICK = Profile(
    name="quick", detection_trials=6, asyncio_trials=4, queue_proxy_trials=4, kubelet_trials=4,
    sweep_trials=4, sweep_cpu_seconds=0.5, cpu_seconds=0.5, unready_per_mode=2, unready_seconds=2.0,
    wrk_seconds=2.0, idle_jitter_seconds=0.5, fanout_sizes=(1, 10), steady_seconds=0.5,
    floor_trials=6, start_trials=2, start_phase_seconds=0.5, check_runs=5, ab_rounds=1,
)


def _triple(s: Summary) -> str:
    return f"{s.triple()} (n={s.n})"


def _p50_p99(s: Summary) -> dict[str, float]:
    return {"p50": s.p50, "p99": s.p99}


def _detection_goal(kind: str) -> str:
    p50, p99 = GOAL_DETECTION_MS[kind]
    return f"p50 <= {p50:g}, p99 <= {p99:g}"


def _detection_parts(kind: str, s: Summary) -> dict[str, bool]:
    p50, p99 = GOAL_DETECTION_MS[kind]
    return {"p50": s.p50 <= p50, "p99": s.p99 <= p99}


def _ms_label(interval_ms: float) -> str:
    return f"{interval_ms:g}ms"


def _round_goal_ms(n: int) -> float | None:
    """The goal of the smallest N in GOAL_ROUND_MS at or above n; None above them all."""
    bounds = [goal for size, goal in sorted(GOAL_ROUND_MS.items()) if n <= size]
    return bounds[0] if bounds else None


@dataclass
class Suite:
    profile: Profile
    workdir: Path
    progress: Callable[[str], None]
    this: SidecarInstall = THIS_CHECKOUT
    baseline: SidecarInstall | None = None
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # this checkout's figures, and the drivers'
    baseline_data: dict[str, Any] = field(default_factory=dict)  # the same sections, the baseline's figures
    before_after: list[dict[str, Any]] = field(default_factory=list)  # per compared row: numbers and ratios
    _detections: dict[tuple[str, str], dict[str, DetectionRun]] = field(default_factory=dict)
    _not_ready: dict[tuple[str, float], dict[str, AggressiveCost]] = field(default_factory=dict)
    _floors: dict[float, FloorCost] = field(default_factory=dict)
    _fanout: dict[int, dict[str, FanoutRun]] = field(default_factory=dict)

    @property
    def installs(self) -> tuple[SidecarInstall, ...]:
        """Baseline first: each round of an alternation starts with it."""
        return (self.this,) if self.baseline is None else (self.baseline, self.this)

    @property
    def rounds(self) -> int:
        return 1 if self.baseline is None else self.profile.ab_rounds

    def _share(self, total: int) -> int:
        """One round's part of `total` trials."""
        return math.ceil(total / self.rounds)

    async def _alternate(self, measure: Callable[..., Awaitable[T]]) -> dict[str, list[T]]:
        """measure(install=...) for every install, round by round: baseline, this, baseline, this."""
        results: dict[str, list[T]] = {install.label: [] for install in self.installs}
        for _ in range(self.rounds):
            for install in self.installs:
                results[install.label].append(await measure(install=install))
        return results

    def _compared(
        self, section: str, figure: str, per_install: Mapping[str, T], show: Callable[[T], str],
        headline: Callable[[T], dict[str, float]], *, baseline: str = "", ratio_text: str = "", goal: str = "",
        verdict_text: str = "",
    ) -> None:
        """A row whose measured column is show(this install's figure); with a baseline revision,
        also show(the baseline's) and this ÷ baseline of each headline number."""
        this = per_install[self.this.label]
        row = Row(section, figure, show(this), baseline, ratio_text, goal, verdict_text)
        if self.baseline is not None:
            before = per_install[self.baseline.label]
            now, then = headline(this), headline(before)
            ratios = {name: ratio(value, then[name]) for name, value in now.items()}
            row = replace(row, before=show(before),
                          change=", ".join(f"{change(r)} {name}" for name, r in ratios.items()))
            self.before_after.append({"section": section, "figure": figure.strip(), "this": now,
                                      "baseline": then, "this_over_baseline": ratios})
        self.rows.append(row)

    def _record(
        self, key: str, describe: Callable[[str], dict[str, Any]], shared: dict[str, Any] | None = None
    ) -> None:
        """JSON: describe(label) of this checkout (with the drivers' `shared` figures), and of the baseline."""
        self.data[key] = {**describe(self.this.label), **(shared or {})}
        if self.baseline is not None:
            self.baseline_data[key] = describe(self.baseline.label)

    async def warm_up(self) -> None:
        """Start each install's sidecar once with one probe of each type, so every later start runs
        from bytecode (sidecar_process.with_bytecode_cache) and none pays the first compile."""
        port = free_port_outside_ephemeral(set())
        handlers: list[dict[str, Any]] = [
            {"tcpSocket": {"host": "127.0.0.1", "port": port}},
            {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/"}},
            {"grpc": {"port": port}},
            {"exec": {"command": ["true"]}},
        ]
        for install in self.installs:
            sidecar = await start_sidecar([container(f"c{i}", h) for i, h in enumerate(handlers)], self.workdir,
                                          install=install)
            await asyncio.sleep(_WARM_UP_SECONDS)
            await sidecar.stop()

    async def _detect(self, kind: str, variant: Variant, trials: int) -> dict[str, DetectionRun]:
        key = (kind, variant.label)
        if key not in self._detections:
            started = time.monotonic()
            runs = await self._alternate(functools.partial(
                sidecar_detection, kind, variant, self._share(trials), self.workdir))
            self._detections[key] = {label: DetectionRun.merge(r) for label, r in runs.items()}
            self.progress(f"detection {kind:<4} {variant.label}: {trials} trials per install "
                          f"in {time.monotonic() - started:.1f}s")
        return self._detections[key]

    async def _cost(self, kind: str, interval_ms: float) -> dict[str, AggressiveCost]:
        """Not-ready CPU of 4 containers per install; for tcp the floor loop at the same interval
        takes its turn in every round, before the sidecars."""
        key = (kind, interval_ms)
        if key not in self._not_ready:
            variant = DEFAULTS if interval_ms == DEFAULT_INTERVAL_MS else _interval_variant(interval_ms)
            p = self.profile
            seconds = (p.cpu_seconds if interval_ms == DEFAULT_INTERVAL_MS else p.sweep_cpu_seconds) / self.rounds
            costs: dict[str, list[AggressiveCost]] = {install.label: [] for install in self.installs}
            floors: list[FloorCost] = []
            for _ in range(self.rounds):
                if kind == "tcp":
                    floors.append(await floor_cost(interval_ms / 1000, containers=AGGRESSIVE_CONTAINERS,
                                                   seconds=seconds))
                for install in self.installs:
                    costs[install.label].append(await aggressive_cost(
                        kind, variant, self.workdir, containers=AGGRESSIVE_CONTAINERS, seconds=seconds,
                        install=install))
            self._not_ready[key] = {label: AggressiveCost.mean(c) for label, c in costs.items()}
            if floors:
                self._floors[interval_ms] = FloorCost.mean(floors)
        return self._not_ready[key]

    def _cost_ok(self, kind: str, cost: AggressiveCost, interval_ms: float) -> dict[str, bool]:
        parts = {"CPU": cost.cpu_per_container <= GOAL_NOT_READY_CPU[kind]}
        if kind == "tcp":
            parts["floor"] = self._over_floor(cost, interval_ms) <= GOAL_OVER_FLOOR
        return parts

    def _over_floor(self, cost: AggressiveCost, interval_ms: float) -> float:
        return ratio(cost.cpu_per_container, self._floors[interval_ms].cpu_per_container)

    def _cost_goal(self, kind: str) -> str:
        floor = f", <= {GOAL_OVER_FLOOR:g}x floor" if kind == "tcp" else ""
        return f"<= {GOAL_NOT_READY_CPU[kind]:g}% each{floor}"

    # -- §1 ---------------------------------------------------------------------------

    async def detection(self) -> None:
        p = self.profile
        runs = {kind: await self._detect(kind, DEFAULTS, p.detection_trials) for kind in PROBE_KINDS}
        started = time.monotonic()
        floor = summarize(await floor_detection(p.floor_trials, interval=DEFAULT_INTERVAL_MS / 1000))
        self.progress(f"floor loop detection: {p.floor_trials} trials in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        kubelet_runs = await kubelet_baseline(PROBE_KINDS, p.kubelet_trials)
        kubelet = {kind: summarize(samples) for kind, samples in kubelet_runs.items()}
        self.progress(f"kubelet baseline: {p.kubelet_trials} per type in {time.monotonic() - started:.1f}s")
        # 50 ms-scale figures don't mind the millisecond of contention running the four at once costs.
        started = time.monotonic()
        qp_runs = await asyncio.gather(*(
            sidecar_detection(kind, QUEUE_PROXY, p.queue_proxy_trials, self.workdir, install=self.this)
            for kind in PROBE_KINDS
        ))
        queue_proxy = {kind: summarize(run.samples) for kind, run in zip(PROBE_KINDS, qp_runs, strict=True)}
        self.progress(f"queue-proxy baseline: {p.queue_proxy_trials} per type in {time.monotonic() - started:.1f}s")
        costs = {kind: await self._cost(kind, DEFAULT_INTERVAL_MS) for kind in NOT_READY_KINDS}
        floor_cost_now = self._floors[DEFAULT_INTERVAL_MS]
        floor_name = f"floor, bare loop at {_ms_label(DEFAULT_INTERVAL_MS)} ({_driver_loop()})"

        for kind in PROBE_KINDS:
            by_install = {label: summarize(run.samples) for label, run in runs[kind].items()}
            s, k, q = by_install[self.this.label], kubelet[kind], queue_proxy[kind]
            self._compared(
                "1", f"ready detection {kind}, ms p50/p90/p99", by_install, _triple, _p50_p99,
                baseline=f"kubelet period 1s: {_triple(k)}",
                ratio_text=f"{times(ratio(k.p50, s.p50))} p50, {times(ratio(k.p99, s.p99))} p99",
                goal=_detection_goal(kind), verdict_text=verdict_parts(_detection_parts(kind, s)),
            )
            self.rows.append(Row(
                "1", "", "", f"queue-proxy 50ms/100ms: {_triple(q)}",
                f"{times(ratio(q.p50, s.p50))} p50, {times(ratio(q.p99, s.p99))} p99",
            ))
            if kind == "tcp":
                self.rows.append(Row(
                    "1", "", "", f"{floor_name}: {_triple(floor)}",
                    f"{times(ratio(floor.p50, s.p50))} p50, {times(ratio(floor.p99, s.p99))} p99",
                ))
            splits = {label: (summarize(run.schedule_waits), summarize(run.answer_paths))
                      for label, run in runs[kind].items() if run.schedule_waits}
            if len(splits) == len(self.installs):
                self._compared(
                    "1", "  split: T -> next attempt reaches target | -> 200", splits,
                    lambda split: f"{split[0].triple()} | {split[1].triple()}",
                    lambda split: {"wait p50": split[0].p50, "rest p50": split[1].p50},
                )
        for kind in NOT_READY_KINDS:
            by_cost = costs[kind]
            cost = by_cost[self.this.label]
            floor_text = ratio_text = ""
            if kind == "tcp":
                floor_text = (f"{floor_name}: {floor_cost_now.cpu_per_container:.2f}% each "
                              f"({floor_cost_now.attempts_per_second / floor_cost_now.containers:.0f} connects/s each)")
                ratio_text = f"{times(self._over_floor(cost, DEFAULT_INTERVAL_MS))} floor"
            self._compared(
                "1", f"not ready, {NOT_READY_WHAT[kind]}: {AGGRESSIVE_CONTAINERS} {kind} containers "
                f"at {_ms_label(DEFAULT_INTERVAL_MS)} (default), CPU each, RSS",
                by_cost, _cost_text, lambda c: {"CPU": c.cpu_per_container, "RSS": c.rss_mib},
                baseline=floor_text, ratio_text=ratio_text, goal=self._cost_goal(kind),
                verdict_text=verdict_parts(self._cost_ok(kind, cost, DEFAULT_INTERVAL_MS)),
            )

        def describe(label: str) -> dict[str, Any]:
            kinds: dict[str, Any] = {}
            for kind in PROBE_KINDS:
                run = runs[kind][label]
                kinds[kind] = {
                    "defaults": summarize(run.samples),
                    "defaults_schedule_wait": summarize(run.schedule_waits) if run.schedule_waits else None,
                    "defaults_answer_path": summarize(run.answer_paths) if run.answer_paths else None,
                    "sidecar_loop": "uvloop" if run.uvloop_loaded else "asyncio",
                }
                if label == self.this.label:  # the drivers' baselines, measured once, beside this checkout
                    kinds[kind].update(kubelet_period_1s=kubelet[kind], queue_proxy_50ms_100ms=queue_proxy[kind])
            return {"unit": "ms", "kinds": kinds, "not_ready_cpu": {k: costs[k][label] for k in NOT_READY_KINDS}}

        self._record("1_ready_detection", describe, {
            "floor": {"interval_ms": DEFAULT_INTERVAL_MS, "loop": _driver_loop(), "detection": floor,
                      "cost_4_closed_ports": floor_cost_now},
        })

    # -- §1 sweep: what justifies the default interval --------------------------------

    async def sweep(self) -> None:
        p = self.profile
        table: dict[str, dict[str, dict[str, Any]]] = {install.label: {} for install in self.installs}
        # interval -> kinds meeting the latency goals, and the CPU goals (this checkout)
        latency_ok: dict[float, set[str]] = {}
        cpu_ok: dict[float, set[str]] = {}
        for interval in SWEEP_INTERVALS_MS:
            for kind in NOT_READY_KINDS:
                if interval == DEFAULT_INTERVAL_MS:
                    runs = await self._detect(kind, DEFAULTS, p.detection_trials)
                else:
                    runs = await self._detect(kind, _interval_variant(interval), p.sweep_trials)
                costs = await self._cost(kind, interval)
                pairs = {label: (summarize(run.samples), costs[label]) for label, run in runs.items()}
                s, cost = pairs[self.this.label]
                latency = _detection_parts(kind, s)
                cpu = self._cost_ok(kind, cost, interval)
                if all(latency.values()):
                    latency_ok.setdefault(interval, set()).add(kind)
                if all(cpu.values()):
                    cpu_ok.setdefault(interval, set()).add(kind)
                for label, (summary, by_cost) in pairs.items():
                    table[label].setdefault(_ms_label(interval), {})[kind] = {
                        "detection": summary, "cpu_percent_per_not_ready_container": by_cost.cpu_per_container,
                        "attempts_per_second_per_container": by_cost.attempts_per_second / by_cost.containers,
                        "sidecar_rss_mib": by_cost.rss_mib,
                    }
                floor_text = ratio_text = ""
                if kind == "tcp":
                    floor_text = f"floor: {self._floors[interval].cpu_per_container:.2f}% each"
                    ratio_text = f"{times(self._over_floor(cost, interval))} floor"
                default_mark = " (default)" if interval == DEFAULT_INTERVAL_MS else ""
                self._compared(
                    "1", f"sweep {_ms_label(interval)}{default_mark} {kind}: p50/p99 ms, CPU/not-ready container",
                    pairs,
                    lambda pair: (f"{fmt_ms(pair[0].p50)} / {fmt_ms(pair[0].p99)} ms (n={pair[0].n}), "
                                  f"{pair[1].cpu_per_container:.2f}% "
                                  f"({pair[1].attempts_per_second / pair[1].containers:.0f} attempts/s)"),
                    lambda pair: {"p50": pair[0].p50, "p99": pair[0].p99, "CPU": pair[1].cpu_per_container},
                    baseline=floor_text, ratio_text=ratio_text,
                    goal=f"{_detection_goal(kind)}, {self._cost_goal(kind)}",
                    verdict_text=verdict_parts({**latency, **cpu}),
                )
        both = set(NOT_READY_KINDS)
        passing = [i for i in SWEEP_INTERVALS_MS if latency_ok.get(i) == both and cpu_ok.get(i) == both]
        floors = {_ms_label(i): self._floors[i] for i in SWEEP_INTERVALS_MS}
        self._record("1_interval_sweep", lambda label: {
            "containers_for_cpu": AGGRESSIVE_CONTAINERS, "intervals": table[label],
        }, {
            "cpu_window_seconds": p.sweep_cpu_seconds, "default_cpu_window_seconds": p.cpu_seconds,
            "floor_4_closed_ports": floors, "meeting_all_goals_ms": passing,
            "meeting_latency_goals_ms": {k: [i for i in SWEEP_INTERVALS_MS if k in latency_ok.get(i, ())]
                                         for k in NOT_READY_KINDS},
            "meeting_cpu_goals_ms": {k: [i for i in SWEEP_INTERVALS_MS if k in cpu_ok.get(i, ())]
                                     for k in NOT_READY_KINDS},
        })

        def listed(by_interval: dict[float, set[str]], kind: str) -> str:
            return ",".join(f"{i:g}" for i in SWEEP_INTERVALS_MS if kind in by_interval.get(i, ())) or "none"

        self.rows.append(Row(
            "1", "sweep: intervals (ms) meeting the latency goals | the CPU goals",
            "; ".join(f"{k} {listed(latency_ok, k)} | {listed(cpu_ok, k)}" for k in NOT_READY_KINDS),
            f"all, both kinds: {', '.join(_ms_label(i) for i in passing) or 'none'}", "",
            f"default {_ms_label(DEFAULT_INTERVAL_MS)} meets all", verdict(DEFAULT_INTERVAL_MS in passing),
        ))

    # -- §1 a real start: closed, then 503, then 200 ----------------------------------

    async def start(self) -> None:
        p = self.profile
        started = time.monotonic()
        runs = await self._alternate(functools.partial(
            real_start, self.workdir, trials=self._share(p.start_trials), phase_seconds=p.start_phase_seconds))
        merged = {label: RealStartRun.merge(r) for label, r in runs.items()}
        self.progress(f"real start: {p.start_trials} trials per install in {time.monotonic() - started:.1f}s")
        this = merged[self.this.label]
        s = summarize(this.samples)
        phase = f"{p.start_phase_seconds:g}s"

        def show(run: RealStartRun) -> str:
            detected = summarize(run.samples)
            return (f"{run.closed_cpu_percent:.2f}% | {run.unready_cpu_percent:.2f}%, "
                    f"{fmt_ms(detected.p50)} / {fmt_ms(detected.p99)} ms (n={detected.n})")

        self._compared(
            "1", f"real start, http: closed {phase}, 503 {phase}, then 200: CPU closed | 503, the 200 in p50/p99",
            merged, show,
            lambda run: {"closed CPU": run.closed_cpu_percent, "503 CPU": run.unready_cpu_percent,
                         "p50": summarize(run.samples).p50, "p99": summarize(run.samples).p99},
            goal=f"<= {GOAL_NOT_READY_CPU['tcp']:g}% | <= {GOAL_NOT_READY_CPU['http']:g}%, {_detection_goal('http')}",
            verdict_text=verdict_parts({
                "closed": this.closed_cpu_percent <= GOAL_NOT_READY_CPU["tcp"],
                "503": this.unready_cpu_percent <= GOAL_NOT_READY_CPU["http"], **_detection_parts("http", s),
            }),
        )
        self._record("1_real_start", lambda label: {
            "unit": "ms", "containers": 1, "phase_seconds": p.start_phase_seconds,
            "closed_cpu_percent": merged[label].closed_cpu_percent,
            "unready_cpu_percent": merged[label].unready_cpu_percent,
            "detection": summarize(merged[label].samples),
            "schedule_wait": summarize(merged[label].schedule_waits) if merged[label].schedule_waits else None,
        })

    # -- §2 ---------------------------------------------------------------------------

    async def unready(self) -> None:
        p = self.profile
        started = time.monotonic()
        rounds = await self._alternate(functools.partial(
            unready_detection, self.workdir, per_mode=p.unready_per_mode, seconds=p.unready_seconds / self.rounds))
        self.progress(f"unready detection in {time.monotonic() - started:.1f}s")
        runs = {label: {mode: [s for r in by_round for s in r[mode]] for mode in by_round[0]}
                for label, by_round in rounds.items()}
        ours = {label: summarize(run["defaults"]) for label, run in runs.items()}
        kubelet = summarize(runs[self.this.label]["kubelet period 1s"])
        s = ours[self.this.label]
        bound_ms = FAILURE_THRESHOLD * KUBELET_PERIOD_SECONDS * 1000.0
        self._record("2_unready_detection", lambda label: {
            "unit": "ms", "failure_threshold": FAILURE_THRESHOLD, "defaults": ours[label],
            "kubelet_period_1s_measured": summarize(runs[label]["kubelet period 1s"]),
        }, {"kubelet_bound_ms": bound_ms, "poll_resolution_ms": 10})
        self._compared(
            "2", "unready detection, defaults + failureThreshold 3, ms p50/p90/p99", ours, _triple, _p50_p99,
            baseline=f"kubelet period 1s, measured: {_triple(kubelet)}",
            ratio_text=f"{times(ratio(kubelet.p50, s.p50))} p50, {times(ratio(kubelet.p99, s.p99))} p99",
        )
        self.rows.append(Row(
            "2", "", "", f"failureThreshold x periodSeconds = {bound_ms:.0f} ms",
            f"{times(ratio(bound_ms, s.p99))} vs our p99",
        ))

    # -- §3 and §6 ---------------------------------------------------------------------

    async def load(self) -> None:
        if not wrk_available():
            self.rows.append(Row("3", "/ready under wrk", "skipped: wrk not installed (apt-get install wrk)"))
            return
        p = self.profile
        runs: dict[str, dict[str, LoadRun]] = {}
        for loop_name in ("uvloop", "asyncio"):
            if loop_name == "uvloop" and not _uvloop_installed():
                continue
            started = time.monotonic()
            runs[loop_name] = await endpoint_load(
                loop_name, self.workdir, seconds=p.wrk_seconds, idle_seconds=p.idle_jitter_seconds,
                installs=self.installs,
            )
            self.progress(f"endpoint load {loop_name} in {time.monotonic() - started:.1f}s")
        self._record("3_endpoint_load", lambda label: {loop: by[label] for loop, by in runs.items()})
        for loop_name, by_install in runs.items():
            section = "3" if loop_name == ("uvloop" if "uvloop" in runs else "asyncio") else "6"
            run = by_install[self.this.label]
            side, bare = run.sidecar, run.bare
            self._compared(
                section, f"/ready under wrk -c50, {HALVES} x {max(1, round(p.wrk_seconds / HALVES))} s "
                f"({loop_name}): req/s, p99", by_install,
                lambda r: f"{r.sidecar.requests_per_second:,.0f} req/s, p99 {fmt_ms(r.sidecar.p99_ms)} ms",
                lambda r: {"req/s": r.sidecar.requests_per_second, "p99": r.sidecar.p99_ms},
                baseline=f"bare aiohttp ({loop_name}): {bare.requests_per_second:,.0f} req/s, "
                f"p99 {fmt_ms(bare.p99_ms)} ms",
                ratio_text=times(run.ratio), goal=f">= {GOAL_LOAD_RATIO:g}x, p99 <= {GOAL_LOAD_P99_MS:g} ms",
                verdict_text=verdict_parts({"ratio": run.ratio >= GOAL_LOAD_RATIO,
                                            "p99": side.p99_ms <= GOAL_LOAD_P99_MS}),
            )
            idle = run.jitter_idle
            self._compared(
                section, f"probe lateness during the flood ({loop_name})", by_install,
                lambda r: (f"p99 <= {fmt_ms(r.jitter_flood.p99_upper_ms)} ms, {r.jitter_flood.late_over_10ms} "
                           f"of {r.jitter_flood.attempts} attempts > 10 ms late"),
                lambda r: {"p99 bound": r.jitter_flood.p99_upper_ms},
                baseline=f"idle: p99 <= {fmt_ms(idle.p99_upper_ms)} ms, {idle.late_over_10ms} of {idle.attempts} "
                "> 10 ms",
                goal=LATE_GOAL, verdict_text=verdict(run.jitter_flood.late_over_10ms == 0),
            )

    async def uvloop_detection(self) -> None:
        """§6 for §1: the same trials on the plain asyncio loop, against the default loop's."""
        if not _uvloop_installed():
            self.rows.append(Row("6", "uvloop comparison", "skipped: uvloop not installed"))
            return
        p = self.profile
        summaries: dict[str, dict[str, dict[str, Summary]]] = {install.label: {} for install in self.installs}
        for kind in PROBE_KINDS:
            on_uvloop = {label: summarize(run.samples)
                         for label, run in (await self._detect(kind, DEFAULTS, p.detection_trials)).items()}
            on_asyncio = {label: summarize(run.samples)
                          for label, run in (await self._detect(kind, DEFAULTS_ASYNCIO, p.asyncio_trials)).items()}
            for label in summaries:
                summaries[label][kind] = {"uvloop": on_uvloop[label], "asyncio": on_asyncio[label]}
            ours, theirs = on_asyncio[self.this.label], on_uvloop[self.this.label]
            self._compared(
                "6", f"ready detection {kind} on asyncio, ms p50/p90/p99", on_asyncio, _triple, _p50_p99,
                baseline=f"uvloop: {_triple(theirs)}", ratio_text=f"{times(ratio(ours.p50, theirs.p50))} p50",
                goal=_detection_goal(kind), verdict_text=verdict_parts(_detection_parts(kind, ours)),
            )
        self._record("6_uvloop_detection", lambda label: summaries[label])

    # -- §4 ---------------------------------------------------------------------------

    async def _fanout_runs(self, n: int) -> dict[str, FanoutRun]:
        if n not in self._fanout:
            started = time.monotonic()
            steady = self.profile.steady_seconds / self.rounds if n == 100 else 0.0
            runs = await self._alternate(functools.partial(fanout, n, self.workdir, steady_seconds=steady))
            self._fanout[n] = {label: FanoutRun.mean(r) for label, r in runs.items()}
            self.progress(f"fan-out {n} in {time.monotonic() - started:.1f}s")
        return self._fanout[n]

    async def fanout(self) -> None:
        floors: dict[int, FanoutFloor] = {}
        for n in self.profile.fanout_sizes:
            by_install = await self._fanout_runs(n)
            run = by_install[self.this.label]
            floors[n] = floor = await fanout_floor(n)
            goal_ms = _round_goal_ms(n)
            self._compared(
                "4", f"fan-out N={n}, 50 ms probes: one round / all ready after flip", by_install,
                lambda r: (f"{fmt_ms(r.round_seconds * 1000)} / {fmt_ms(r.all_ready_seconds * 1000)} ms "
                           f"(starting all N: {fmt_ms(r.start_spread_seconds * 1000)} ms)"),
                lambda r: {"round": r.round_seconds, "all ready": r.all_ready_seconds},
                baseline=f"sequential round N x 50 ms: {fmt_ms(run.sequential_round_seconds * 1000)} ms",
                ratio_text=times(ratio(run.sequential_round_seconds, run.round_seconds)),
                goal=f"round <= {goal_ms:g} ms" if goal_ms is not None else "(no goal above N=1000)",
                verdict_text=verdict(run.round_seconds * 1000 <= goal_ms) if goal_ms is not None else "",
            )
            self.rows.append(Row(
                "4", "", "", f"floor, a bare client's {n} GETs at once: {fmt_ms(floor.round_seconds * 1000)} ms "
                f"(starting: {fmt_ms(floor.start_spread_seconds * 1000)} ms)",
                f"{times(ratio(run.round_seconds, floor.round_seconds))} the floor",
            ))
        self._record("4_fanout", lambda label: {
            "runs": [self._fanout[n][label] for n in self.profile.fanout_sizes],
        }, {"probe_seconds": PROBE_SECONDS, "rounds_per_install": self.rounds,
            "floor": [floors[n] for n in self.profile.fanout_sizes]})

    # -- §5 ---------------------------------------------------------------------------

    async def _steady_pair(self, *, install: SidecarInstall, seconds: float) -> tuple[SteadyOverhead, SteadyOverhead]:
        # Side by side: CPU is per process, and both are nearly idle.
        steady, light = await asyncio.gather(
            steady_overhead(self.workdir, seconds=seconds, kinds=PROBE_KINDS, install=install),
            steady_overhead(self.workdir, seconds=seconds, kinds=LIGHT_KINDS, install=install),
        )
        return steady, light

    async def overhead(self) -> None:
        p = self.profile
        started = time.monotonic()
        pairs = await self._alternate(functools.partial(
            self._steady_pair, seconds=STEADY_WINDOW_FACTOR * p.steady_seconds / self.rounds))
        steady = {label: SteadyOverhead.mean([pair[0] for pair in r]) for label, r in pairs.items()}
        light = {label: SteadyOverhead.mean([pair[1] for pair in r]) for label, r in pairs.items()}
        self.progress(f"steady overhead in {time.monotonic() - started:.1f}s")
        hundred = await self._fanout_runs(100)
        started = time.monotonic()
        check_times = await check_startup(self.installs, runs=p.check_runs)
        self.progress(f"check start-up: {p.check_runs} runs per install in {time.monotonic() - started:.1f}s")
        check_ms = {label: summarize(samples) for label, samples in check_times.items()}

        def cpu_rss(o: SteadyOverhead) -> dict[str, float]:
            return {"CPU": o.cpu_percent, "RSS": o.rss_mib}

        def steady_text(o: SteadyOverhead) -> str:
            return f"{o.cpu_percent:.2f}% of a core, {_rss(o.rss_mib)}"

        this_steady, this_light = steady[self.this.label], light[self.this.label]
        self._compared(
            "5", "steady, 4 ready containers (http, tcp, grpc, exec): CPU, RSS", steady, steady_text, cpu_rss,
            goal=f"CPU <= {GOAL_STEADY_CPU:g}%, RSS <= {GOAL_RSS_MIB:g} MiB",
            verdict_text=verdict_parts({"CPU": this_steady.cpu_percent <= GOAL_STEADY_CPU,
                                        "RSS": this_steady.rss_mib <= GOAL_RSS_MIB}),
        )
        self._compared(
            "5", "steady, 4 ready containers (2 http, 2 tcp): CPU, RSS", light, steady_text, cpu_rss,
            goal=f"RSS <= {GOAL_RSS_MIB:g} MiB", verdict_text=verdict(this_light.rss_mib <= GOAL_RSS_MIB),
        )
        self._compared(
            "5", "steady, 100 ready containers (http, 50 ms): CPU, RSS", hundred,
            lambda r: f"{_or_nan(r.steady_cpu_percent):.2f}% of a core, {_or_nan(r.steady_rss_mib):.1f} MiB",
            lambda r: {"CPU": _or_nan(r.steady_cpu_percent), "RSS": _or_nan(r.steady_rss_mib)},
        )
        alone = check_ms[PYTHON_ALONE]
        this_check = check_ms[self.this.label]
        self._compared(
            "5", "check start-up, --probe x=tcp://127.0.0.1:<closed>: wall ms p50/p90/p99",
            {label: check_ms[label] for label in (install.label for install in self.installs)}, _triple,
            lambda s: {"p50": s.p50},
            baseline=f"python -c pass: {_triple(alone)}", ratio_text=f"{times(ratio(this_check.p50, alone.p50))}",
            goal=f"p50 <= {GOAL_CHECK_STARTUP_MS:g} ms", verdict_text=verdict(this_check.p50 <= GOAL_CHECK_STARTUP_MS),
        )
        self._record("5_overhead", lambda label: {
            "steady_4_ready": steady[label], "steady_4_ready_http_tcp": light[label],
            "steady_100_ready": {"cpu_percent": hundred[label].steady_cpu_percent,
                                 "rss_mib": hundred[label].steady_rss_mib},
            "check_startup_ms": check_ms[label],
        }, {"python_alone_startup_ms": alone})


def _cost_text(cost: AggressiveCost) -> str:
    return (f"{cost.cpu_per_container:.2f}% ({cost.attempts_per_second / cost.containers:.0f} attempts/s each), "
            f"{cost.rss_mib:.1f} MiB")


def _rss(mib: float) -> str:
    return f"{mib:.1f} MiB ({mib * 2**20 / 1e6:.1f} MB)"


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def _interval_variant(interval_ms: float) -> Variant:
    return Variant(_ms_label(interval_ms), interval=_ms_label(interval_ms))


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _driver_loop() -> str:
    """The loop the floor runs (--loop auto), as the sidecar picks its own."""
    return "uvloop" if _uvloop_installed() else "asyncio"
