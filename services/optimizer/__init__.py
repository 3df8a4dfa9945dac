"""OptimizerService: the live network picture and the decisions taken from it (almere.optimizer.v1).
The service's wiring is in `service.py`, so the pure parts (routing, levers, signal control) import
without gRPC and NATS."""
