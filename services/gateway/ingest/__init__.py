"""Operators' standard feeds (SPDP, DATEX II parking status) read and reported to the parking service."""
