"""CAP 1.2 (OASIS Common Alerting Protocol, https://docs.oasis-open.org/emergency/cap/v1.2/) alerts
for incidents, and an Atom feed of them: the form public warning systems, alert aggregators and
broadcasters take in.

One message per incident version: the identifier names the incident and its version, and `sent` is
when that version was made, so re-reading the feed gives the same message (only an open incident's
`expires` moves on with the reading) and a consumer sees each change once. The first version is an
Alert, later ones Updates referring to it (earlier versions' send times are not kept, so only the
first is referenced), a cancelled incident a Cancel. A cleared incident is an Update with urgency
Past and response AllClear.

Incidents carry restricted fields (``notes``, ``reporter``); nothing here reads them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from almere.incidents.v1 import incidents_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from services.gateway.formats.publisher import Publisher

CAP = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM = "http://www.w3.org/2005/Atom"

# How long an open incident's message stays valid past the moment it was read (or past its expected
# end): a consumer that stops hearing from us lets it lapse instead of showing it for ever.
EXPIRY_HORIZON = timedelta(hours=1)
# Onsets within this time of the message are urgency Expected, later ones Future.
EXPECTED_WITHIN = timedelta(hours=1)
# CAP: the headline SHOULD be shorter than 160 characters.
HEADLINE_MAX = 160

T = pb.IncidentType
S = pb.IncidentState
# Transport always; a second category where the incident is also one of these.
EXTRA_CATEGORY = {
    T.INCIDENT_TYPE_COLLISION: "Rescue",
    T.INCIDENT_TYPE_MEDICAL: "Rescue",
    T.INCIDENT_TYPE_HAZARD: "Safety",
    T.INCIDENT_TYPE_DEMONSTRATION: "Safety",
    T.INCIDENT_TYPE_POLICE_ACTION: "Security",
    T.INCIDENT_TYPE_FIRE: "Fire",
    T.INCIDENT_TYPE_WEATHER: "Met",
}
# The event in the publisher's language (English for languages not listed).
EVENTS = {
    "nl": {
        T.INCIDENT_TYPE_COLLISION: "Aanrijding",
        T.INCIDENT_TYPE_BREAKDOWN: "Pechgeval",
        T.INCIDENT_TYPE_HAZARD: "Gevaar op de weg",
        T.INCIDENT_TYPE_ROAD_WORKS: "Wegwerkzaamheden",
        T.INCIDENT_TYPE_POLICE_ACTION: "Politie-inzet",
        T.INCIDENT_TYPE_FIRE: "Brand",
        T.INCIDENT_TYPE_MEDICAL: "Medische noodsituatie",
        T.INCIDENT_TYPE_DEMONSTRATION: "Demonstratie",
        T.INCIDENT_TYPE_PLANNED_EVENT: "Evenement",
        T.INCIDENT_TYPE_WEATHER: "Weersomstandigheden",
    },
    "en": {
        T.INCIDENT_TYPE_COLLISION: "Collision",
        T.INCIDENT_TYPE_BREAKDOWN: "Breakdown",
        T.INCIDENT_TYPE_HAZARD: "Road hazard",
        T.INCIDENT_TYPE_ROAD_WORKS: "Road works",
        T.INCIDENT_TYPE_POLICE_ACTION: "Police activity",
        T.INCIDENT_TYPE_FIRE: "Fire",
        T.INCIDENT_TYPE_MEDICAL: "Medical emergency",
        T.INCIDENT_TYPE_DEMONSTRATION: "Demonstration",
        T.INCIDENT_TYPE_PLANNED_EVENT: "Planned event",
        T.INCIDENT_TYPE_WEATHER: "Weather",
    },
}
OTHER_EVENT = {"nl": "Verkeersincident", "en": "Traffic incident"}
SEVERITY = {
    pb.SEVERITY_MINOR: "Minor",
    pb.SEVERITY_MODERATE: "Moderate",
    pb.SEVERITY_MAJOR: "Severe",
    pb.SEVERITY_CRITICAL: "Extreme",
}
# Radius of the affected circle by severity, in km (CAP circles are "lat,lon radius_km").
RADIUS_KM = {pb.SEVERITY_MINOR: 0.2, pb.SEVERITY_MODERATE: 0.5, pb.SEVERITY_MAJOR: 1.0, pb.SEVERITY_CRITICAL: 2.0}
DEFAULT_RADIUS_KM = 0.5
ENDED = frozenset({S.INCIDENT_STATE_CLEARED, S.INCIDENT_STATE_CANCELLED})


def alert(incident: pb.Incident, *, publisher: Publisher, now: datetime) -> bytes:
    """The current version of one incident as a CAP 1.2 alert document. `now` only bounds `expires`
    of an open incident (see EXPIRY_HORIZON)."""
    return _document(_alert(incident, publisher=publisher, now=now))


def alerts(incidents: Iterable[pb.Incident], *, publisher: Publisher, now: datetime, feed_url: str) -> bytes:
    """An Atom feed (RFC 4287) with one entry per incident, its CAP alert as the entry's content:
    the index CAP aggregators poll."""
    zone = ZoneInfo(publisher.time_zone)
    feed = etree.Element(f"{{{ATOM}}}feed", nsmap={None: ATOM})
    _add(feed, "id", feed_url, ns=ATOM)
    _add(feed, "title", publisher.name, ns=ATOM)
    _add(feed, "updated", _format(now, zone), ns=ATOM)
    _add(_add(feed, "author", None, ns=ATOM), "name", publisher.name, ns=ATOM)
    etree.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=feed_url)
    for incident in incidents:
        cap = _alert(incident, publisher=publisher, now=now)
        entry = _add(feed, "entry", None, ns=ATOM)
        message = f"{publisher.sender},{_identifier(incident, incident.version, publisher)}"
        _add(entry, "id", uuid.uuid5(uuid.NAMESPACE_URL, f"cap:{message}").urn, ns=ATOM)
        _add(entry, "title", _headline(incident, publisher)[0], ns=ATOM)
        _add(entry, "updated", _format(_sent(incident), zone), ns=ATOM)
        etree.SubElement(entry, f"{{{ATOM}}}content", type="application/cap+xml").append(cap)
    return _document(feed)


def _alert(incident: pb.Incident, *, publisher: Publisher, now: datetime) -> Any:
    zone = ZoneInfo(publisher.time_zone)
    sent = _sent(incident)
    msg_type = _msg_type(incident)
    root = etree.Element(f"{{{CAP}}}alert", nsmap={None: CAP})
    _add(root, "identifier", _identifier(incident, incident.version, publisher))
    _add(root, "sender", publisher.sender)
    _add(root, "sent", _format(sent, zone))
    _add(root, "status", "Actual")
    _add(root, "msgType", msg_type)
    _add(root, "scope", "Public")
    if msg_type != "Alert":
        first = f"{publisher.sender},{_identifier(incident, 1, publisher)},{_format(_utc(incident.create_time), zone)}"
        _add(root, "references", first)
    _add(root, "incidents", _incident_id(incident))

    info = _add(root, "info")
    _add(info, "language", publisher.language)
    _add(info, "category", "Transport")
    if incident.type in EXTRA_CATEGORY:
        _add(info, "category", EXTRA_CATEGORY[incident.type])
    headline, event = _headline(incident, publisher)
    _add(info, "event", event)
    if incident.state == S.INCIDENT_STATE_CLEARED:
        _add(info, "responseType", "AllClear")
    elif incident.impact.full_closure and incident.state not in ENDED:
        _add(info, "responseType", "Avoid")
    onset = _onset(incident)
    urgency = _urgency(incident, sent=sent, onset=onset)
    _add(info, "urgency", urgency)
    _add(info, "severity", SEVERITY.get(incident.severity, "Unknown"))
    _add(info, "certainty", _certainty(incident, urgency))
    code = _add(info, "eventCode")
    _add(code, "valueName", f"{publisher.national_identifier}:incidentType")
    _add(code, "value", pb.IncidentType.Name(incident.type).removeprefix("INCIDENT_TYPE_"))
    _add(info, "effective", _format(sent, zone))
    _add(info, "onset", _format(onset, zone))
    _add(info, "expires", _format(_expires(incident, sent=sent, now=now), zone))
    _add(info, "senderName", publisher.name)
    _add(info, "headline", headline)
    if incident.title and incident.title != headline:
        _add(info, "description", incident.title)

    area = _add(info, "area")
    _add(area, "areaDesc", incident.title or event)
    if incident.HasField("location"):
        radius = RADIUS_KM.get(incident.severity, DEFAULT_RADIUS_KM)
        _add(area, "circle", f"{incident.location.latitude:.6f},{incident.location.longitude:.6f} {radius}")
    return root


def _msg_type(incident: pb.Incident) -> str:
    if incident.state == S.INCIDENT_STATE_CANCELLED:
        return "Cancel"
    return "Update" if incident.version > 1 else "Alert"


def _urgency(incident: pb.Incident, *, sent: datetime, onset: datetime) -> str:
    """Relative to the message, not to the reader: a planned closure announced a week ahead stays
    Future in that message; its activation is a new version and a new message."""
    if incident.state in ENDED:
        return "Past"
    if onset > sent + EXPECTED_WITHIN:
        return "Future"
    return "Expected" if onset > sent else "Immediate"


def _certainty(incident: pb.Incident, urgency: str) -> str:
    if incident.state == S.INCIDENT_STATE_CANCELLED:
        return "Unlikely"
    if incident.state == S.INCIDENT_STATE_REPORTED or urgency in ("Future", "Expected"):
        return "Likely"
    return "Observed"


def _expires(incident: pb.Incident, *, sent: datetime, now: datetime) -> datetime:
    if incident.state in ENDED:
        return sent + EXPIRY_HORIZON
    horizon = now + EXPIRY_HORIZON
    if incident.impact.HasField("expected_end_time"):
        return max(horizon, _utc(incident.impact.expected_end_time))
    return horizon


def _headline(incident: pb.Incident, publisher: Publisher) -> tuple[str, str]:
    """(headline, event). A title too long for a headline is cut, and given whole as description."""
    language = publisher.language if publisher.language in EVENTS else "en"
    event = EVENTS[language].get(incident.type, OTHER_EVENT[language])
    title = incident.title or event
    if len(title) > HEADLINE_MAX:
        title = title[: HEADLINE_MAX - 1] + "…"
    return title, event


def _onset(incident: pb.Incident) -> datetime:
    impact = incident.impact
    return _utc(impact.expected_start_time if impact.HasField("expected_start_time") else incident.create_time)


def _sent(incident: pb.Incident) -> datetime:
    return _utc(incident.update_time)


def _identifier(incident: pb.Incident, version: int, publisher: Publisher) -> str:
    """No spaces, commas, '<' or '&' (CAP); stable per incident version."""
    return f"{publisher.national_identifier}.incidents.{_incident_id(incident)}.{version}"


def _incident_id(incident: pb.Incident) -> str:
    return incident.name.removeprefix("incidents/")


def _utc(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _format(when: datetime, zone: ZoneInfo) -> str:
    """CAP's date-time: local time with its offset, whole seconds ("2026-05-01T14:00:00+02:00")."""
    return when.astimezone(zone).replace(microsecond=0).isoformat()


def _add(parent: Any, tag: str, text: str | None = None, *, ns: str = CAP) -> Any:
    """A child element (lxml has no type stubs: elements are Any here)."""
    element = etree.SubElement(parent, f"{{{ns}}}{tag}")
    element.text = text
    return element


def _document(root: Any) -> bytes:
    return bytes(etree.tostring(root, encoding="UTF-8", xml_declaration=True))
