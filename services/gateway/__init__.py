"""The HTTP gateway: the services' data as JSON, Server-Sent Events and the standard feeds (DATEX II,
SPDP, NGSI-LD, CAP), and operators' standard feeds polled into the parking service. It reads the
services over gRPC, never their tables."""
