"""The optimizer's decisions in-process, without bus, database or gRPC: the same decisions for batch
evaluation and tests, where starting the services would only measure the plumbing."""

from __future__ import annotations

from typing import Any

from almere.optimizer.v1 import optimizer_pb2 as pb

from services.common.clock import utcnow
from services.optimizer import admission
from services.optimizer.decision_engine import DecisionEngine
from services.optimizer.routing import RoadGraph
from services.optimizer.usecases import Loaded


class InProcessOptimizer:
    def __init__(self, graph: RoadGraph) -> None:
        self.decisions = DecisionEngine(graph, Loaded())

    def ReportVehicles(self, request: pb.ReportVehiclesRequest, **_: Any) -> pb.ReportVehiclesResponse:
        """What the service's ReportVehicles does, minus persisting: validate, then decide."""
        admission.validate_report(self.decisions.graph, request)
        writes = self.decisions.on_report(request, utcnow())
        return pb.ReportVehiclesResponse(decisions=[t.decision for t in writes.decisions])
