"""Composition roots: the `almere` command, the local stack launcher, the demo, runs coupling the
twin to the services, and the benchmarks' harnesses. Only these import both the services and the twin."""
