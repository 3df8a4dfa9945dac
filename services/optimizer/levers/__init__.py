"""The optimizer's levers, one module each: pure decisions over the live picture (no bus, no database)."""
