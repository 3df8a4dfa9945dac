"""Encoders of the exchange standards: protobuf resources in, documents out. No I/O."""
