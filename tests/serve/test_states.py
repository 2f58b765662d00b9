"""One vocabulary for readiness states (docs/behaviour.md#states): every surface of a real
in-process sidecar, probing real targets, spells a state with the words in sidecar.model,
and the docs' table lists exactly those words."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import aiohttp

from probes.spec import HttpGetSpec, TcpSocketSpec
from sidecar.app import Sidecar
from sidecar.model import (
    CONTAINER_STATES,
    DRAINING,
    NOT_READY,
    POD_STATES,
    READY,
    UNOBSERVED,
    ContainerSpec,
    ProbeTiming,
    SidecarConfig,
)
from sidecar.runtime.scheduler import AggressivePolicy
from sidecar.runtime.settings import RunSettings
from sidecar.serve.logs import setup_logging
from tests.target_apps import FlipTarget

DOCS = Path(__file__).resolve().parents[2] / "docs" / "behaviour.md"
SETTINGS = RunSettings(
    health_port=0, grpc_port=None, metrics_port=0, bind="127.0.0.1", aggressive=AggressivePolicy(steady_period=0.05)
)


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url) as resp:
        doc: dict[str, object] = await resp.json()
        return doc


async def test_every_surface_spells_the_states_the_same_way() -> None:
    good, bad = await FlipTarget.start(200), await FlipTarget.start(503)
    logger = setup_logging("json")
    stream = io.StringIO()
    assert isinstance(logger.handlers[0], logging.StreamHandler)
    logger.handlers[0].setStream(stream)
    containers = (
        ContainerSpec("up", HttpGetSpec(port=good.port, path="/health")),
        ContainerSpec("down", HttpGetSpec(port=bad.port, path="/health"), required=False),
        ContainerSpec("later", TcpSocketSpec(port=good.port), ProbeTiming(initial_delay=3600.0), required=False),
        ContainerSpec("blind", None),
    )
    car = Sidecar(SidecarConfig(containers), SETTINGS, logger=logger)
    ports = await car.start()
    health = f"http://127.0.0.1:{ports.health}"
    try:
        assert await car.state.wait_ready(5)
        async with aiohttp.ClientSession() as session:
            ready = await get_json(session, f"{health}/ready")
            status = await get_json(session, f"{health}/status")
            one = await get_json(session, f"{health}/ready/later")
            async with session.get(f"http://127.0.0.1:{ports.metrics}/metrics") as resp:
                exposition = await resp.text()
            car.drainer.begin()
            drained = await get_json(session, f"{health}/ready")
    finally:
        await car.stop()
        await good.stop()
        await bad.stop()

    expected = {"up": READY, "down": NOT_READY, "later": NOT_READY, "blind": UNOBSERVED}
    ready_containers = ready["containers"]
    assert isinstance(ready_containers, dict)
    assert {name: c["status"] for name, c in ready_containers.items()} == expected
    assert ready_containers["later"]["reason"] == "not probed yet", "not probed yet is not_ready, with its reason"
    status_containers = status["containers"]
    assert isinstance(status_containers, list)
    assert {c["name"]: c["status"] for c in status_containers} == expected
    assert (one["status"], ready["status"], status["status"], drained["status"]) == (NOT_READY, READY, READY, DRAINING)

    to_labels = set(re.findall(r'readiness_transitions_total\{container="\w+",to="(\w+)"\}', exposition))
    assert to_labels == {READY, NOT_READY}

    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    worded = {doc[key] for doc in docs for key in ("from", "to") if key in doc}
    assert worded == {READY, NOT_READY}, "the only transition is up's, not_ready -> ready"
    assert [doc["pod"] for doc in docs if "pod" in doc] == [READY, DRAINING]
    texts = [doc["msg"] for doc in docs]
    assert "up: not_ready -> ready" in " ".join(texts) and "pod: draining" in texts


def test_the_docs_table_lists_exactly_the_states_in_the_code() -> None:
    section = DOCS.read_text().split("\n## States\n", 1)[1].split("\n## ", 1)[0]
    first_table = section.split("\n\n| state |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", first_table, re.MULTILINE)
    assert documented == [READY, NOT_READY, UNOBSERVED, DRAINING]
    assert set(documented) == set(CONTAINER_STATES) | set(POD_STATES)
    header = next(line for line in section.splitlines() if line.startswith("| surface |"))
    assert [cell.strip(" `") for cell in header.split("|")[2:-1]] == [READY, NOT_READY, UNOBSERVED, DRAINING]
