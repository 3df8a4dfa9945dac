"""AIP-122 resource names: `<collection>/<id>` with ids of lowercase letters, digits and hyphens."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_id(value: str, what: str) -> str:
    if not ID_PATTERN.match(value):
        raise InvalidArgument(
            f"{what} {value!r} is malformed: use 1-63 lowercase letters, digits and hyphens, starting with a letter"
        )
    return value


def id_from_name(name: str, collection: str, field: str = "name") -> str:
    """`facilities/garage-a` -> `garage-a` for collection "facilities"."""
    if not name:
        raise InvalidArgument(f"{field} is required ({collection}/{{id}})")
    prefix = f"{collection}/"
    if not name.startswith(prefix):
        raise InvalidArgument(f"{field} {name!r} must look like {collection}/{{id}}")
    return validate_id(name[len(prefix) :], f"{field} id")
