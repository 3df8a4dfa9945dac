"""The four domain services (parking, incidents, signals, optimizer), each in its own package with the
same layers, on the runtime they share (services/common)."""
