"""The operators' feeds the gateway takes in, from a JSON file (ALMERE_GATEWAY_FEEDS_FILE):

    {"feeds": [{"name": "q-park-almere", "format": "spdp", "url": "https://.../dynamic",
                "interval_seconds": 60, "facilities": {"<their id>": "garage-centrum"},
                "token_file": "/etc/almere/feed-tokens/q-park-almere"}]}

`format` is spdp or datex2; without `url` the feed is push-only. The token is the operator's own
(role operator:<id>), read from a file so that no secret sits in the configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.gateway.ingest.poller import FeedConfig

OPTIONAL = {"url": "url", "interval_seconds": "interval_s", "stale_after_factor": "stale_after_factor",
            "max_bytes": "max_bytes", "timeout_seconds": "timeout_s"}  # fmt: skip


def load_feeds(path: Path) -> list[FeedConfig]:
    """Every feed of the file; a mistake stops the gateway at start with a message naming it."""
    try:
        entries = json.loads(path.read_text())["feeds"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{path}: not a feeds file ({{"feeds": [...]}}): {error}') from None
    feeds = [_feed(path, entry) for entry in entries]
    names = [f.name for f in feeds]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: feed names must differ, got {names}")
    return feeds


def _feed(path: Path, entry: dict[str, Any]) -> FeedConfig:
    try:
        token = Path(entry["token_file"]).read_text().strip()
        options = {ours: entry[theirs] for theirs, ours in OPTIONAL.items() if theirs in entry}
        return FeedConfig(
            name=str(entry["name"]),
            format=str(entry["format"]),
            operator_token=token,
            facilities=dict(entry["facilities"]),
            **options,
        )
    except KeyError as missing:
        raise ValueError(f"{path}: feed {entry.get('name', '?')!r} lacks {missing}") from None
    except OSError as error:
        raise ValueError(f"{path}: feed {entry.get('name', '?')!r}: token_file: {error}") from None
