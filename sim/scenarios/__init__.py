"""Scenarios of the digital twin, each built reproducibly by code from plain inputs."""
