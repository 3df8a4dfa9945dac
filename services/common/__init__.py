"""Runtime shared by every service: configuration, gRPC bootstrap, auth, bus, database, outbox."""
