"""The SUMO digital twin: scenarios, the runner, the field devices it plays, KPIs and reports."""
