"""What the DATEX II version 3 publications share: namespaces, the d2:payload envelope, multilingual
strings, UTC times, point locations and serialisation. Pure functions; lxml builds the trees.

Element names, order (xs:sequence) and xsi:type follow the DATEX II v3.3 schemas Common,
LocationReferencing and Situation. The parking publications follow the parking model that v3 feeds
(e.g. NDW's) carry over from the DATEX II 2.x parking extension (parkingRecord, parkingRecordStatus,
parkingOccupancy ...) in the v3 parking namespace, with v3's conventions (targetClass, xsi:type).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeAlias

from almere.type.v1 import geo_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from services.gateway.formats.publisher import Publisher

# An lxml element; Any because lxml ships no type stubs.
Node: TypeAlias = Any

D2 = "http://datex2.eu/schema/3/d2Payload"
COM = "http://datex2.eu/schema/3/common"
PRK = "http://datex2.eu/schema/3/parking"
SIT = "http://datex2.eu/schema/3/situation"
LOC = "http://datex2.eu/schema/3/locationReferencing"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# Declared once on the root: xsi:type values ("prk:UrbanParkingSite") need their prefix in scope.
NSMAP = {"d2": D2, "com": COM, "prk": PRK, "sit": SIT, "loc": LOC, "xsi": XSI}


def sub(
    parent: Node,
    ns: str,
    tag: str,
    *,
    text: str | None = None,
    xsi_type: str | None = None,
    attrs: dict[str, str] | None = None,
) -> Node:
    """Appends <ns:tag>, optionally typed with xsi:type (DATEX II subclasses of abstract classes)."""
    node = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if xsi_type is not None:
        node.set(f"{{{XSI}}}type", xsi_type)
    for name, value in (attrs or {}).items():
        node.set(name, value)
    if text is not None:
        node.text = text
    return node


def payload(publication_type: str, *, publisher: Publisher, now: datetime) -> Node:
    """The d2:payload root of one publication (xsi:type e.g. "sit:SituationPublication") with what
    every PayloadPublication starts with: publicationTime and publicationCreator."""
    root = etree.Element(f"{{{D2}}}payload", nsmap=NSMAP)
    root.set(f"{{{XSI}}}type", publication_type)
    root.set("lang", publisher.language)
    root.set("modelBaseVersion", "3")
    sub(root, COM, "publicationTime", text=timestamp(now))
    creator = sub(root, COM, "publicationCreator")
    sub(creator, COM, "country", text=publisher.country)
    sub(creator, COM, "nationalIdentifier", text=publisher.national_identifier)
    return root


def multilingual(parent: Node, ns: str, tag: str, text: str, *, lang: str) -> Node:
    """A com:MultilingualString in one language: <ns:tag><com:values><com:value lang=..>."""
    node = sub(parent, ns, tag)
    values = sub(node, COM, "values")
    sub(values, COM, "value", text=text, attrs={"lang": lang})
    return node


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, milliseconds only when there are any. A naive datetime is refused:
    it would silently be read as the machine's local time."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: DATEX II times need a time zone")
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds").replace("+00:00", "Z")


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def number(value: float, *, digits: int) -> str:
    """A decimal without exponent or trailing zeros (xs:float and the readers' decimal parsers)."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def resource_id(name: str) -> str:
    """The DATEX id of a resource: the last part of its name ("facilities/p-centrum" -> "p-centrum");
    empty for a resource without a name, which the encoders leave out."""
    return name.rpartition("/")[2]


def point_by_coordinates(parent: Node, point: geo_pb2.LatLng) -> Node:
    """loc:pointByCoordinates with the WGS84 point (7 decimals: about a centimetre)."""
    node = sub(parent, LOC, "pointByCoordinates")
    coordinates = sub(node, LOC, "pointCoordinates")
    sub(coordinates, LOC, "latitude", text=number(point.latitude, digits=7))
    sub(coordinates, LOC, "longitude", text=number(point.longitude, digits=7))
    return node


def to_bytes(root: Node) -> bytes:
    """The document as UTF-8 with an XML declaration."""
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data
