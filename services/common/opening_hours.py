"""Weekly opening hours (a facility's windows in its own time zone): shared by the parking service,
which stores and checks them, and the optimizer, which guides no one to a closed facility."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.common.errors import InvalidArgument

__all__ = ["DEFAULT_TIME_ZONE", "is_open", "parse_clock", "windows"]

# Where a facility is when it does not say (the city this runs for first).
DEFAULT_TIME_ZONE = "Europe/Amsterdam"


def windows(opening_hours: Iterable[Any]) -> list[dict[str, object]]:
    """A facility's OpeningWindow messages as the plain windows `is_open` reads (and tables store)."""
    return [{"day_of_week": w.day_of_week, "opens": w.opens, "closes": w.closes} for w in opening_hours]


def parse_clock(text: str, field: str) -> int:
    """'07:30' -> minutes after midnight; '24:00' allowed as the end of a day."""
    match = re.fullmatch(r"(\d{2}):(\d{2})", text)
    if not match or int(match[2]) > 59 or int(match[1]) > 24 or (int(match[1]) == 24 and int(match[2]) != 0):
        raise InvalidArgument(f"{field} {text!r} must be HH:MM between 00:00 and 24:00")
    return int(match[1]) * 60 + int(match[2])


def is_open(windows: list[dict[str, object]], time_zone: str, when: datetime) -> bool:
    """True if `when` falls inside one of the weekly windows (always open when there are none)."""
    if not windows:
        return True
    local = when.astimezone(ZoneInfo(time_zone))
    minute_of_week = (local.isoweekday() - 1) * 1440 + local.hour * 60 + local.minute
    for w in windows:
        start = (int(str(w["day_of_week"])) - 1) * 1440 + parse_clock(str(w["opens"]), "opens")
        length = parse_clock(str(w["closes"]), "closes") - parse_clock(str(w["opens"]), "opens")
        if length <= 0:
            length += 1440
        if (minute_of_week - start) % (7 * 1440) < length:
            return True
    return False
