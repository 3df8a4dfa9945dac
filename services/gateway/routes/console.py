"""What the control-room dashboard needs besides the services' RPCs: who is logged in, the road
network to draw, and the finished simulation runs' reports."""

from __future__ import annotations

import asyncio
import html
import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from services.common.network import load_network
from services.gateway.routes.deps import Gateway, caller, gateway, token_of
from services.gateway.upstream import Metadata

router = APIRouter(tags=["dashboard"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CallerDep = Annotated[Metadata, Depends(caller)]
# What a report folder (one holding report.md) may hand out: the report and its plots and tables.
# Nothing outside such a folder is served, whatever else the reports folder holds (tokens, keys).
REPORT_FILES = {".md", ".png", ".svg", ".csv"}
MAX_REPORTS = 200


@router.get("/api/v1/whoami", summary="The caller the token names, and its role")
async def whoami(gw: GatewayDep, auth: CallerDep) -> dict[str, str]:
    entry = gw.tokens.lookup(token_of(auth)) if gw.tokens else None
    if entry is None or entry.expired():
        raise HTTPException(401, "unknown or expired token", headers={"WWW-Authenticate": "Bearer"})
    return {"caller": entry.identity.caller, "role": entry.identity.role_name}


@router.get("/api/v1/network", summary="The road network (lanes and traffic lights) as GeoJSON in WGS84")
async def network(request: Request, gw: GatewayDep, auth: CallerDep) -> Response:
    if gw.settings.network_file is None:
        raise HTTPException(404, "the gateway has no road network (ALMERE_NETWORK_FILE)")
    # Read once per file (cached); sumolib takes a while on a large city, so not on the event loop.
    road = await asyncio.to_thread(load_network, gw.settings.network_file)
    return Response(_json(await asyncio.to_thread(road.geojson)), media_type="application/geo+json",
                    headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _reports_dir(gw: Gateway) -> Path:
    if gw.settings.gateway_reports_dir is None:
        raise HTTPException(404, "the gateway has no reports folder (ALMERE_GATEWAY_REPORTS_DIR)")
    return gw.settings.gateway_reports_dir.resolve()


@router.get("/api/v1/reports", summary="Finished simulation runs' reports, newest first")
async def reports(gw: GatewayDep, auth: CallerDep) -> dict[str, list[dict[str, str]]]:
    root = _reports_dir(gw)
    found = sorted(root.glob("**/report.md"), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_REPORTS]
    return {
        "reports": [
            {
                "name": str(p.parent.relative_to(root).parent) if p.parent.name == "report" else str(p.parent.name),
                "url": f"/reports/{p.relative_to(root).with_suffix('.html')}",
                "updated": datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat(),
            }
            for p in found
        ]
    }


@router.get("/reports/{path:path}", summary="A report as a web page, or one of its plots")
async def report_file(path: str, gw: GatewayDep) -> Response:
    """Reports hold no personal or restricted data (KPIs of simulated runs): a link opens them in
    the browser without a token. Only files under the reports folder, of the report's own kinds."""
    root = _reports_dir(gw)
    wanted = (root / path).resolve()
    page = wanted.suffix == ".html"
    source = wanted.with_suffix(".md") if page else wanted
    in_report = source.is_relative_to(root) and (source.parent / "report.md").is_file()
    if not in_report or source.suffix not in REPORT_FILES or not source.is_file():
        raise HTTPException(404, f"no report file {path!r}")
    if page:
        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(source.read_text())
        title = source.parent.parent.name if source.parent.name == "report" else source.parent.name
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                            f"<style>{REPORT_STYLE}</style><body>{body}</body>")  # fmt: skip
    media_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    return Response(source.read_bytes(), media_type=media_type)


REPORT_STYLE = (
    "body{font:15px system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
    "img{max-width:100%}"
)
