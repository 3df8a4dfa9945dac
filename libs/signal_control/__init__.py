"""Adaptive signal control: pure decision code (phases, max-pressure, guards) plus one SUMO adapter."""
