"""Libraries without a server, a bus or a database: what the services and the twin both use."""
