"""The HTTP gateway in front of the real services: open-data feeds without a token, the JSON API and
live updates with the callers' own tokens and roles, conditional and compressed answers, paging,
rate limits, health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from lxml import etree

from tests.integration.helpers import Incidents, Parking

RESTRICTED = "suspect fled towards the Stadhuisplein"  # notes only public safety may read


@pytest.fixture
async def city(parking: str, incidents: str, tokens: dict[str, str]) -> dict[str, str]:
    """Two garages with counts and two confirmed incidents (a collision with police notes, a police action)."""
    async with grpc.aio.insecure_channel(parking) as p, grpc.aio.insecure_channel(incidents) as i:
        garages = Parking(p, tokens)
        await garages.create("garage-a", capacity=100, display_name="Parkeergarage Centrum")
        await garages.create("garage-b", capacity=50, display_name="Parkeergarage Stadhuisplein")
        await garages.report("garage-a", 40, 1)
        await garages.report("garage-b", 50, 1)
        police = Incidents(i, tokens)
        names = {}
        for key, kind in (
            ("collision", ipb.INCIDENT_TYPE_COLLISION),
            ("police-action", ipb.INCIDENT_TYPE_POLICE_ACTION),
        ):
            incident = await police.report(type=kind, notes=RESTRICTED, severity=ipb.SEVERITY_MAJOR)
            await police.as_("police").TransitionIncident(
                ipb.TransitionIncidentRequest(name=incident.name, state=ipb.INCIDENT_STATE_CONFIRMED)
            )
            names[key] = incident.name
        return names


def auth(tokens: dict[str, str], caller: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[caller]}"}


async def test_public_feeds_need_no_token_and_hold_only_public_data(gateway: str, city: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        status = await http.get("/feeds/datex2/parking-status")
        assert status.status_code == 200 and status.headers["content-type"].startswith("application/xml")
        tree = etree.fromstring(status.content)
        vacant = {
            r.xpath("string(.//*[local-name()='parkingRecordReference']/@id)"): r.xpath(
                "string(.//*[local-name()='parkingNumberOfVacantSpaces'])"
            )
            for r in tree.xpath("//*[local-name()='parkingRecordStatus']")
        }
        assert vacant == {"garage-a": "60", "garage-b": "0"}
        bodies = {}
        for path in (
            "/feeds/datex2/parking-table",
            "/feeds/datex2/situations",
            "/feeds/spdp/index",
            "/feeds/spdp/static/garage-a",
            "/feeds/spdp/dynamic/garage-a",
            "/ngsi-ld/v1/entities?type=OffStreetParking",
            "/ngsi-ld/v1/entities?type=Alert&options=keyValues",
            "/feeds/cap/alerts.atom",
        ):
            reply = await http.get(path)
            assert reply.status_code == 200, (path, reply.text)
            bodies[path] = reply.text
        collision_id = city["collision"].removeprefix("incidents/")
        police_action_id = city["police-action"].removeprefix("incidents/")
        cap = await http.get(f"/feeds/cap/{collision_id}.xml")
        assert cap.status_code == 200 and b"urn:oasis:names:tc:emergency:cap:1.2" in cap.content
        bodies["cap"] = cap.text
        # Notes never leave for the public, and police actions are not published at all.
        assert not any(RESTRICTED in body for body in bodies.values())
        assert collision_id in bodies["/feeds/datex2/situations"] and collision_id in bodies["/feeds/cap/alerts.atom"]
        assert not any(police_action_id in body for body in bodies.values())
        assert (await http.get(f"/feeds/cap/{police_action_id}.xml")).status_code == 404
        index = json.loads(bodies["/feeds/spdp/index"])
        assert "garage-a" in json.dumps(index) and "/feeds/spdp/dynamic/garage-a" in json.dumps(index)
        dynamic = json.loads(bodies["/feeds/spdp/dynamic/garage-a"])
        assert '"vacantSpaces": 60' in json.dumps(dynamic)


async def test_json_api_passes_the_callers_token_and_role(
    gateway: str, city: dict[str, str], tokens: dict[str, str]
) -> None:
    collision = city["collision"].removeprefix("incidents/")
    async with httpx.AsyncClient(base_url=gateway) as http:
        refused = await http.get("/api/v1/facilities")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["content-type"] == "application/problem+json"
        forged = await http.get("/api/v1/facilities", headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401 and forged.json()["title"] == "UNAUTHENTICATED"
        police = await http.get(f"/api/v1/incidents/{collision}", headers=auth(tokens, "police"))
        operator = await http.get(f"/api/v1/incidents/{collision}", headers=auth(tokens, "operator"))
        assert police.json()["notes"] == RESTRICTED  # public safety sees what the service shows it
        assert operator.status_code == 200 and "notes" not in operator.json() and "reporter" not in operator.json()
        missing = await http.get("/api/v1/facilities/no-such-garage", headers=auth(tokens, "engineer"))
        assert missing.status_code == 404 and "no-such-garage" in missing.json()["detail"]
        first = await http.get("/api/v1/facilities?page_size=1", headers=auth(tokens, "engineer"))
        assert len(first.json()["facilities"]) == 1 and first.json()["nextPageToken"]
        second = await http.get(
            f"/api/v1/facilities?page_size=1&page_token={first.json()['nextPageToken']}",
            headers=auth(tokens, "engineer"),
        )
        assert {f["name"] for f in first.json()["facilities"] + second.json()["facilities"]} == {
            "facilities/garage-a",
            "facilities/garage-b",
        }
        bad = await http.get("/api/v1/facilities?page_size=-1", headers=auth(tokens, "engineer"))
        assert bad.status_code == 400 and "page_size" in bad.json()["detail"]


async def test_feeds_are_conditional_and_compressed(
    gateway: str, city: dict[str, str], parking: str, tokens: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        first = await http.get("/feeds/datex2/parking-status", headers={"Accept-Encoding": "gzip"})
        assert first.headers["content-encoding"] == "gzip" and first.headers["cache-control"].startswith("public")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        # Read again from the services: nothing changed, so the same document (its publicationTime
        # included) and a 304 for the poller that holds it.
        again = await http.get("/feeds/datex2/parking-status", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        since = await http.get("/feeds/datex2/parking-status", headers={"If-Modified-Since": modified})
        assert since.status_code == 304
        for path in ("/feeds/datex2/situations", "/feeds/cap/alerts.atom", "/feeds/spdp/dynamic/garage-a"):
            tag = (await http.get(path)).headers["etag"]
            assert (await http.get(path, headers={"If-None-Match": tag})).status_code == 304, path
        async with grpc.aio.insecure_channel(parking) as channel:
            await Parking(channel, tokens).report("garage-a", 41, 2)
        changed = await http.get("/feeds/datex2/parking-status", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert b">59<" in changed.content
        assert changed.headers["last-modified"] != modified or changed.headers["etag"] != etag


async def test_feeds_are_kept_for_their_max_age(
    start_gateway: Callable[..., Awaitable[str]], city: dict[str, str], parking: str, tokens: dict[str, str]
) -> None:
    """Within max-age the gateway answers from what it made, without asking the services: a burst
    of anonymous readers costs one read of them."""
    gateway = await start_gateway(gateway_feed_max_age_seconds=60)
    async with httpx.AsyncClient(base_url=gateway) as http:
        first = await http.get("/feeds/datex2/parking-status")
        async with grpc.aio.insecure_channel(parking) as channel:
            await Parking(channel, tokens).report("garage-a", 41, 2)
        kept = await http.get("/feeds/datex2/parking-status")
        assert kept.headers["etag"] == first.headers["etag"] and kept.headers["cache-control"] == "public, max-age=60"


async def test_rate_limit_per_client(start_gateway: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> None:
    gateway = await start_gateway(gateway_rate_limit="3/minute", gateway_caller_rate_limit="5/minute")
    async with httpx.AsyncClient(base_url=gateway) as http:
        answers = [(await http.get("/feeds/spdp/index")).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = await http.get("/feeds/spdp/index")
        assert int(limited.headers["retry-after"]) >= 1 and "3 per 1 minute" in limited.json()["detail"]
        # A known caller is another client, with the callers' allowance.
        engineer = [
            (await http.get("/api/v1/facilities", headers=auth(tokens, "engineer"))).status_code for _ in range(6)
        ]
        assert engineer == [200] * 5 + [429]
        police = await http.get("/api/v1/facilities", headers=auth(tokens, "police"))
        assert police.status_code == 200
        assert (await http.get("/healthz")).status_code == 200  # probes are never limited


async def test_health_metrics_and_openapi(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/readyz")).json() == {"status": "SERVING"}
        await http.get("/feeds/datex2/parking-table")
        metrics = (await http.get("/metrics")).text
        assert 'almere_http_requests_total{route="/feeds/datex2/parking-table",status="200"}' in metrics
        spec = (await http.get("/openapi.json")).json()
        paths = {"/feeds/datex2/parking-status", "/api/v1/watch/{service}/{name}", "/ngsi-ld/v1/entities"}
        assert paths <= set(spec["paths"])


async def test_readiness_fails_when_a_service_is_down(
    start_gateway: Callable[..., Awaitable[str]], incidents: str
) -> None:
    gateway = await start_gateway(parking_address="127.0.0.1:9")  # nothing listens there
    async with httpx.AsyncClient(base_url=gateway) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and "parking" in ready.json()["detail"]
        feed = await http.get("/feeds/datex2/parking-status")
        assert feed.status_code == 503 and feed.headers["content-type"] == "application/problem+json"


async def test_live_occupancy_arrives_as_server_sent_events(
    gateway: str, city: dict[str, str], parking: str, tokens: dict[str, str]
) -> None:
    events: list[dict[str, object]] = []
    snapshot_seen = asyncio.Event()

    async def listen() -> None:
        async with (
            httpx.AsyncClient(base_url=gateway, timeout=10) as http,
            http.stream("GET", "/api/v1/watch/parking/WatchOccupancy", headers=auth(tokens, "engineer")) as stream,
        ):
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 2:
                        snapshot_seen.set()
                    if len(events) == 3:
                        return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(snapshot_seen.wait(), 5)
    async with grpc.aio.insecure_channel(parking) as channel:
        await Parking(channel, tokens).report("garage-b", 20, 2)
    await asyncio.wait_for(listener, 5)
    assert [e.get("snapshot", False) for e in events] == [True, True, False]
    assert events[2]["occupancy"]["facility"] == "facilities/garage-b"  # type: ignore[index]
    assert events[2]["occupancy"]["freeSpaces"] == 30  # type: ignore[index]


async def test_every_rpc_is_callable_with_the_callers_token(
    gateway: str, city: dict[str, str], tokens: dict[str, str]
) -> None:
    collision = {"name": city["collision"], "state": "INCIDENT_STATE_ACTIVE"}
    async with httpx.AsyncClient(base_url=gateway) as http:
        refused = await http.post(
            "/api/v1/rpc/incidents/TransitionIncident", json=collision, headers=auth(tokens, "operator")
        )
        assert refused.status_code == 403 and refused.json()["title"] == "PERMISSION_DENIED"
        moved = await http.post(
            "/api/v1/rpc/incidents/TransitionIncident", json=collision, headers=auth(tokens, "police")
        )
        assert moved.status_code == 200 and moved.json()["incident"]["state"] == "INCIDENT_STATE_ACTIVE"
        current = await http.post(
            "/api/v1/rpc/incidents/GetIncident", json={"name": city["collision"]}, headers=auth(tokens, "engineer")
        )
        assert current.json()["incident"]["state"] == "INCIDENT_STATE_ACTIVE"
        bad = await http.post("/api/v1/rpc/incidents/GetIncident", json={"nam": "x"}, headers=auth(tokens, "engineer"))
        assert bad.status_code == 400 and "GetIncidentRequest" in bad.json()["detail"]
        garbled = await http.post(
            "/api/v1/rpc/incidents/GetIncident", content=b"\xff\xfe", headers=auth(tokens, "engineer")
        )
        assert garbled.status_code == 400
        invalid = await http.post(
            "/api/v1/rpc/incidents/TransitionIncident",
            json={"name": city["collision"], "state": "INCIDENT_STATE_REPORTED"},
            headers=auth(tokens, "police"),
        )
        assert invalid.status_code == 412 and "cannot go from ACTIVE to REPORTED" in invalid.json()["detail"]
        for path, status in (
            ("/api/v1/rpc/parking/NoSuchMethod", 404),
            ("/api/v1/rpc/parking/RecordGateEvents", 404),  # a client stream: gRPC only
            ("/api/v1/rpc/parking/WatchOccupancy", 405),
            ("/api/v1/rpc/signals/ListIntersections", 503),  # this gateway knows no signal service
            ("/api/v1/rpc/whatif/ListWhatIfs", 503),  # nor a what-if service
            ("/api/v1/rpc/whatif/NoSuchMethod", 404),
        ):
            answer = await http.post(path, json={}, headers=auth(tokens, "engineer"))
            assert answer.status_code == status, (path, answer.text)
        assert (await http.post("/api/v1/rpc/parking/ListFacilities", json={})).status_code == 401


async def test_the_dashboards_own_routes(
    start_gateway: Callable[..., Awaitable[str]], tokens: dict[str, str], network_file: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    report = runs / "almere-centrum" / "report"
    report.mkdir(parents=True)
    (report / "report.md").write_text(
        "# Run\n\n| KPI | none |\n|---|---|\n| delay (s) | 633.0 |\n\n![speed](speed.png)\n"
    )
    (report / "speed.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (runs / "credentials.json").write_text('{"secret": 1}')  # beside the reports, never served
    gateway = await start_gateway(network_file=network_file, gateway_reports_dir=runs)
    async with httpx.AsyncClient(base_url=gateway) as http:
        me = await http.get("/api/v1/whoami", headers=auth(tokens, "police"))
        assert me.json() == {"caller": "police", "role": "police"}
        operator = await http.get("/api/v1/whoami", headers=auth(tokens, "operator"))
        assert operator.json()["role"] == "operator:op-a"
        assert (await http.get("/api/v1/whoami", headers={"Authorization": "Bearer forged"})).status_code == 401
        network = (await http.get("/api/v1/network", headers=auth(tokens, "engineer"))).json()
        kinds = {f["properties"]["kind"] for f in network["features"]}
        lights = {f["properties"]["id"] for f in network["features"] if f["properties"]["kind"] == "light"}
        assert kinds == {"lane", "light"} and lights == {"ring-east", "ring-west", "stadhuisplein"}
        lane = next(f for f in network["features"] if f["properties"]["id"] == "ring-w-n_0")
        lon, lat = lane["geometry"]["coordinates"][0]
        assert 5.1 < lon < 5.3 and 52.3 < lat < 52.4  # WGS84, in Almere
        assert (await http.get("/api/v1/network")).status_code == 401
        listed = (await http.get("/api/v1/reports", headers=auth(tokens, "engineer"))).json()["reports"]
        assert [(r["name"], r["url"]) for r in listed] == [
            ("almere-centrum", "/reports/almere-centrum/report/report.html")
        ]
        page = await http.get(listed[0]["url"])
        assert page.status_code == 200 and "<td>633.0</td>" in page.text and 'src="speed.png"' in page.text
        assert (await http.get("/reports/almere-centrum/report/speed.png")).headers["content-type"] == "image/png"
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        (report / "leak.md").symlink_to(runs / "credentials.json")  # a link out of the report folder
        for path in (
            "/reports/credentials.json",
            "/reports/almere-centrum/report/../../credentials.json",
            "/reports/almere-centrum/report/leak.html",
            "/reports/almere-centrum/report/leak.md",
            "/reports/%00.png",
        ):
            answer = await http.get(path)
            assert answer.status_code == 404 and "secret" not in answer.text, path
        forged = {"Authorization": "Bearer made-up"}
        for path in ("/api/v1/reports", "/api/v1/network", "/api/v1/whoami"):
            assert (await http.get(path, headers=forged)).status_code == 401, path
        front = await http.get("/", follow_redirects=False)
        assert front.status_code == 307 and front.headers["location"] == "/dashboard/"


async def test_refusals_are_clear_and_never_leak_or_crash(
    start_gateway: Callable[..., Awaitable[str]], tokens: dict[str, str]
) -> None:
    gateway = await start_gateway(gateway_rate_limit="3/minute")
    async with httpx.AsyncClient(base_url=gateway) as http:
        # Invented tokens buy no fresh allowance: they count against the address.
        answers = [
            (await http.get("/feeds/spdp/index", headers={"Authorization": f"Bearer junk{i}"})).status_code
            for i in range(4)
        ]
        assert answers == [200, 200, 200, 429]
    gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=gateway) as http:
        for odd in ("Bearer a\tb", "Bearer ünïcode", "Basic dXNlcjpwYXNz", "Bearer"):
            answer = await http.get("/api/v1/facilities", headers={"Authorization": odd.encode()})  # type: ignore[dict-item]
            assert answer.status_code == 401 and answer.headers["content-type"] == "application/problem+json", odd
        missing = await http.get("/no/such/route")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        # A watch the service refuses is answered with its status, not a stream that says so later.
        refused = await http.get("/api/v1/watch/parking/WatchOccupancy", headers={"Authorization": "Bearer forged"})
        assert refused.status_code == 401 and refused.json()["title"] == "UNAUTHENTICATED"
    broken = await start_gateway(service_token="revoked-or-never-issued")
    async with httpx.AsyncClient(base_url=broken) as http:
        answer = await http.get("/feeds/datex2/parking-status")
        assert answer.status_code == 502 and "gateway's own credentials" in answer.json()["detail"]
    down = await start_gateway(parking_address="127.0.0.1:9")
    async with httpx.AsyncClient(base_url=down) as http:
        answer = await http.get("/feeds/datex2/parking-status")
        assert answer.status_code == 503 and "127.0.0.1" not in answer.text  # no internals for strangers
