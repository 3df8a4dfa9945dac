"""The contract's bus half: JetStream streams, subjects and event names (the gRPC half is the
generated `almere` package)."""
