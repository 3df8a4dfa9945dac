"""SignalService: intersections, timing plans and priority (almere.signals.v1)."""
