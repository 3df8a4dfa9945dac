"""What the control-room dashboard needs besides the services' RPCs: who is logged in, the road
network to draw, and the finished simulation runs' reports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from services.common.auth import Identity
from services.common.network import load_network
from services.gateway.routes.deps import Gateway, caller, gateway, token_of
from services.gateway.upstream import Metadata

router = APIRouter(tags=["dashboard"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CallerDep = Annotated[Metadata, Depends(caller)]
# What a report folder (one holding report.md) may hand out: the report and its plots and tables.
# Nothing outside such a folder is served, whatever else the reports folder holds (tokens, keys).
REPORT_FILES = {".md", ".png", ".csv"}
MAX_DEPTH = 4  # data/sim/<scenario>/report/report.md
MAX_REPORTS = 200


def known_caller(gw: GatewayDep, auth: CallerDep) -> Identity:
    """The caller of a token the services know; these routes call no service that would check it."""
    entry = gw.tokens.lookup(token_of(auth)) if gw.tokens else None
    if entry is None or entry.expired():
        raise HTTPException(401, "unknown or expired token", headers={"WWW-Authenticate": "Bearer"})
    return entry.identity


KnownCaller = Annotated[Identity, Depends(known_caller)]


@router.get("/api/v1/whoami", summary="The caller the token names, and its role")
async def whoami(who: KnownCaller) -> dict[str, str]:
    return {"caller": who.caller, "role": who.role_name}


@functools.cache
def _geojson(path: Path) -> bytes:
    return json.dumps(load_network(path).geojson(), separators=(",", ":")).encode()


@router.get("/api/v1/network", summary="The road network (lanes and traffic lights) as GeoJSON in WGS84")
async def network(gw: GatewayDep, who: KnownCaller) -> Response:
    if gw.settings.network_file is None:
        raise HTTPException(404, "the gateway has no road network (ALMERE_NETWORK_FILE)")
    # Made once per file; sumolib takes a while on a large city, so not on the event loop.
    body = await asyncio.to_thread(_geojson, gw.settings.network_file)
    return Response(body, media_type="application/geo+json", headers={"Cache-Control": "private, max-age=3600"})


def _reports_dir(gw: Gateway) -> Path:
    if gw.settings.gateway_reports_dir is None:
        raise HTTPException(404, "the gateway has no reports folder (ALMERE_GATEWAY_REPORTS_DIR)")
    return gw.settings.gateway_reports_dir.resolve()


def _report_listing(root: Path) -> list[dict[str, str]]:
    found: list[tuple[float, Path]] = []
    for depth in range(1, MAX_DEPTH + 1):  # a bounded walk: the folder also holds the runs' bulky outputs
        for path in root.glob("/".join(["*"] * (depth - 1) + ["report.md"])):
            with contextlib.suppress(OSError):  # a run being cleaned away meanwhile
                if _served(root, path):
                    found.append((path.stat().st_mtime, path))
    found.sort(reverse=True)
    return [
        {
            "name": _name(root, p),
            "url": "/reports/" + quote(str(p.relative_to(root).with_suffix(".html"))),
            "updated": datetime.fromtimestamp(mtime, UTC).isoformat(),
        }
        for mtime, p in found[:MAX_REPORTS]
    ]


def _name(root: Path, report: Path) -> str:
    """The run folder the report is about (`<scenario>` for `<scenario>/report/report.md`), else
    the report's own heading (a report right under the root)."""
    folder = report.parent.relative_to(root)
    folder = folder.parent if folder.name == "report" else folder
    if str(folder) != ".":
        return str(folder)
    with report.open(encoding="utf-8") as text:
        return text.readline().lstrip("# ").strip() or root.name


@router.get("/api/v1/reports", summary="Finished simulation runs' reports, newest first")
async def reports(gw: GatewayDep, who: KnownCaller) -> dict[str, list[dict[str, str]]]:
    return {"reports": await asyncio.to_thread(_report_listing, _reports_dir(gw))}


def _served(root: Path, path: Path) -> bool:
    """Whether `path` is a report's own file: a real file (no link anywhere on its way, so nothing
    outside can be pointed at), under the root, beside a report.md, of the report's kinds."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    steps = [root.joinpath(*relative.parts[:i]) for i in range(1, len(relative.parts) + 1)]
    return (
        path.suffix in REPORT_FILES
        and not any(step.is_symlink() for step in steps)
        and path.is_file()
        and (path.parent / "report.md").is_file()
        and not (path.parent / "report.md").is_symlink()
    )


@router.get("/reports/{path:path}", summary="A report as a web page, or one of its plots")
async def report_file(path: str, gw: GatewayDep) -> Response:
    """Reports hold no personal or restricted data (KPIs of simulated runs): a link opens them in
    the browser without a token. Only a report's own files, under the reports folder."""
    root = _reports_dir(gw)
    wanted = PurePosixPath(path)
    if ".." in wanted.parts or "\x00" in path or wanted.is_absolute():
        raise HTTPException(404, f"no report file {path!r}")
    page = wanted.suffix == ".html"
    source = root / (wanted.with_suffix(".md") if page else wanted)
    if not await asyncio.to_thread(_served, root, source):
        raise HTTPException(404, f"no report file {path!r}")
    if page:
        markdown = await asyncio.to_thread(source.read_text, encoding="utf-8")
        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
        title = source.parent.parent.name if source.parent.name == "report" else source.parent.name
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                            f"<style>{REPORT_STYLE}</style><body>{body}</body>", headers=REPORT_HEADERS)  # fmt: skip
    media_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    return Response(await asyncio.to_thread(source.read_bytes), media_type=media_type, headers=REPORT_HEADERS)


REPORT_STYLE = (
    "body{font:15px system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
    "img{max-width:100%}"
)
# A report page runs nothing and loads only its own plots, whatever its Markdown says.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
}
