"""Who publishes the feeds: the exchange standards name a publisher (DATEX II publicationCreator,
CAP sender, NGSI-LD dataProvider) and the language of free text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Publisher:
    # ISO 3166-1 alpha-2, lower case as DATEX II writes it.
    country: str = "nl"
    # DATEX II nationalIdentifier: the publishing organisation within its country.
    national_identifier: str = "almere-traffic"
    # Shown to people (CAP senderName, NGSI-LD dataProvider).
    name: str = "Gemeente Almere verkeerscentrale"
    # CAP sender: an address that identifies the originator.
    sender: str = "verkeerscentrale@almere.example"
    # ISO 639-1 language of titles and descriptions.
    language: str = "nl"
    time_zone: str = "Europe/Amsterdam"
