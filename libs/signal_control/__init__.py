"""Adaptive signal control: pure decision code (phases, controllers, guards, the control round) and
each light's layout read from a SUMO network file; no simulation, server or bus."""
