"""The control room's dashboard in a real browser: Debian's Chromium driven by Playwright against the
gateway in front of the real parking, incident and signal services. Two roles see what their roles
may, an engineer approves a proposal, an operator's refused action shows the service's message, and
an incident reported over gRPC appears on the map; the police verify a partner's report."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.partners.v1 import partners_pb2 as ppb
from almere.signals.v1 import signals_pb2 as spb
from playwright.async_api import Browser, Page, async_playwright, expect

from apps.screenshot import CHROMIUM_FLAGS
from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import Incidents, Parking, Partners, Signals

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium")
NOTES = "suspect fled towards the Stadhuisplein"
PLAZA = "intersections/stadhuisplein"
SHOTS = Path(os.environ.get("ALMERE_SCREENSHOTS", "data/screenshots"))
# What the page may take to show a change: software WebGL on a loaded 2-core machine is slow.
TIMEOUT_MS = int(os.environ.get("ALMERE_BROWSER_TIMEOUT_MS", "60000"))
DASHBOARD = Path(__file__).parents[2] / "services" / "gateway" / "dashboard" / "index.html"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before any page)
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make browser installs it)")
    if not DASHBOARD.is_file():
        pytest.skip("the dashboard is not built (make web builds it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@pytest.fixture
async def city(
    parking: str, incidents: str, signals: str, tokens: dict[str, str]
) -> AsyncIterator[tuple[Parking, Incidents, Signals, ipb.Incident, spb.Plan]]:
    """Two garages with counts, a confirmed collision with police notes, the network's lights and a
    plan the optimizer proposed for the Stadhuisplein, awaiting an engineer's approval."""
    async with (
        grpc.aio.insecure_channel(parking) as p,
        grpc.aio.insecure_channel(incidents) as i,
        grpc.aio.insecure_channel(signals) as s,
    ):
        garages, police, lights = Parking(p, tokens), Incidents(i, tokens), Signals(s, tokens)
        await garages.create("garage-a", capacity=100, display_name="Parkeergarage Centrum")
        await garages.create("garage-b", capacity=50, display_name="Parkeergarage Stadhuisplein", lng=5.215)
        await garages.report("garage-a", 40, 1)
        await garages.report("garage-b", 50, 1)
        collision = await police.report(notes=NOTES, severity=ipb.SEVERITY_MAJOR)
        await police.as_("police").TransitionIncident(
            ipb.TransitionIncidentRequest(name=collision.name, state=ipb.INCIDENT_STATE_CONFIRMED)
        )
        await lights.as_("engineer").ImportNetwork(spb.ImportNetworkRequest())
        retimed = spb.Plan(
            type=spb.PLAN_TYPE_STATIC,
            phases=[spb.Phase(state=s, duration=d) for s, d in (("GGGg", 50), ("yyyy", 3), ("rrrr", 2))],
        )
        proposed = await lights.as_("optimizer").ProposePlan(spb.ProposePlanRequest(parent=PLAZA, plan=retimed))
        yield garages, police, lights, collision, proposed.plan


async def login(browser: Browser, gateway: str, token: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{gateway}/dashboard/")
    await page.get_by_test_id("token-input").fill(token)
    await page.get_by_test_id("login").click()
    await page.wait_for_function("window.__dashboard.ready && window.__dashboard.facilities === 2", timeout=TIMEOUT_MS)
    return page


def short(name: str) -> str:
    return name.rpartition("/")[2]


async def test_the_control_room_in_a_browser(
    browser: Browser,
    city: tuple[Parking, Incidents, Signals, ipb.Incident, spb.Plan],
    start_gateway: Callable[..., Awaitable[str]],
    signals: str,
    network_file: Path,
    tokens: dict[str, str],
) -> None:
    _, police_client, lights, collision, proposal = city
    gateway = await start_gateway(signals_address=signals, network_file=network_file)
    collision_id = short(collision.name)

    police = await login(browser, gateway, tokens["police"])
    await expect(police.get_by_test_id("whoami")).to_contain_text("police")
    await expect(police.get_by_test_id(f"incident-{collision_id}")).to_be_visible()
    await expect(police.get_by_test_id(f"incident-notes-{collision_id}")).to_have_text(NOTES)
    await expect(police.get_by_test_id("facility-garage-a")).to_be_visible()
    await expect(police.get_by_test_id(f"incident-marker-{collision_id}")).to_be_attached()
    await police.screenshot(path=SHOTS / "dashboard-police.png")

    operator = await login(browser, gateway, tokens["operator"])
    await expect(operator.get_by_test_id("whoami")).to_contain_text("operator:op-a")
    await expect(operator.get_by_test_id(f"incident-{collision_id}")).to_be_visible()
    await expect(operator.get_by_test_id(f"incident-notes-{collision_id}")).to_have_count(0)  # police notes
    # The signals panel has answered (refused, for an operator) before its rows are looked for.
    await expect(operator.get_by_test_id("signals-notice")).to_contain_text("Not available", timeout=TIMEOUT_MS)
    await expect(operator.get_by_test_id(f"proposal-stadhuisplein-{proposal.version}")).to_have_count(0)
    await operator.get_by_test_id(f"incident-{collision_id}-activate").click()  # an operator may not
    await expect(operator.get_by_test_id("message")).to_contain_text("may not TransitionIncident", timeout=TIMEOUT_MS)
    await operator.screenshot(path=SHOTS / "dashboard-operator.png")

    engineer = await login(browser, gateway, tokens["engineer"])
    approve = engineer.get_by_test_id(f"proposal-stadhuisplein-{proposal.version}-approve")
    await approve.click(timeout=TIMEOUT_MS)
    await expect(engineer.get_by_test_id(f"proposal-stadhuisplein-{proposal.version}")).to_have_count(
        0, timeout=TIMEOUT_MS
    )
    approved = await lights.as_("engineer").GetPlan(spb.GetPlanRequest(name=proposal.name))
    assert approved.plan.state == spb.PLAN_STATE_ACTIVE

    reported = await police_client.report(title="Breakdown on the Hogering", type=ipb.INCIDENT_TYPE_BREAKDOWN)
    await expect(engineer.get_by_test_id(f"incident-marker-{short(reported.name)}")).to_be_attached(timeout=TIMEOUT_MS)
    await expect(engineer.get_by_test_id(f"incident-{short(reported.name)}")).to_contain_text("Hogering")
    await engineer.screenshot(path=SHOTS / "dashboard-engineer.png")


async def test_the_police_verify_a_partners_report_on_the_dashboard(
    browser: Browser,
    city: tuple[Parking, Incidents, Signals, ipb.Incident, spb.Plan],
    start_gateway: Callable[..., Awaitable[str]],
    start_service: Callable[..., Awaitable[str]],
    tokens: dict[str, str],
) -> None:
    _, incidents, _, _, _ = city
    async with grpc.aio.insecure_channel(await start_service(PARTNERS)) as channel:
        await (
            Partners(channel, tokens)
            .as_("engineer")
            .CreatePartner(
                ppb.CreatePartnerRequest(
                    partner_id="firm-a", partner=ppb.Partner(display_name="Firm A", kind=ppb.PARTNER_KIND_SECURITY_FIRM)
                )
            )
        )
    seen = ipb.PartnerReport(description="a car burning in the garage exit")
    for _ in range(100):  # the registry reaches the incident service through PARTNERS
        try:
            report = await incidents.report(
                "partner", type=ipb.INCIDENT_TYPE_FIRE, title="Car fire", partner_report=seen
            )
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    report_id = short(report.name)
    gateway = await start_gateway()
    police = await login(browser, gateway, tokens["police"])
    await expect(police.get_by_test_id(f"incident-state-{report_id}")).to_have_text("unverified", ignore_case=True)
    await expect(police.get_by_test_id(f"incident-partner-{report_id}")).to_contain_text("partners/firm-a")
    await expect(police.get_by_test_id(f"incident-partner-{report_id}")).to_contain_text(seen.description)
    await police.get_by_test_id(f"incident-{report_id}-verify").click()
    await expect(police.get_by_test_id(f"incident-state-{report_id}")).to_have_text(
        "confirmed", ignore_case=True, timeout=TIMEOUT_MS
    )
    await police.screenshot(path=SHOTS / "dashboard-partner-report.png")
    verified = await incidents.as_("engineer").GetIncident(ipb.GetIncidentRequest(name=report.name))
    assert verified.incident.state == ipb.INCIDENT_STATE_CONFIRMED
