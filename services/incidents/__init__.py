"""IncidentService: incidents, closures and planned events reported by public safety (almere.incidents.v1)."""
