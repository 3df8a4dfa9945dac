"""What every RPC does with partners' data: the rule each read path enforces under the partners'
agreements (docs/partners.md), one line per RPC. `almere roles` prints it under the role table and a
test fails when an RPC of the contract has no line, so a new read path cannot land without a rule."""

from __future__ import annotations

OCCUPANCY = (
    "partners' occupancy shaped per the caller's audience (counts rounded, status only, as it was N "
    "minutes ago), marked in `Occupancy.sharing`; audited"
)
SINGLE = "; refused (PERMISSION_DENIED, the reason) when withheld or the purpose does not fit"
LIST = "; a withheld one is listed without its count, marked"
OWN = "the caller's own or written data: no other partner's"
NONE = "no partner data"
REPORT = (
    "a partner sees its own reports only; others see a partner's report's partner and description as its "
    "`incident-reports` agreement allows, else withheld (`PartnerReport.withheld`)"
)
AUDITED = "; audited"
REGISTRY = "the partner registry: the city and the partner itself only (see the role table)"

RULES: dict[str, str] = {
    "CounterService.CreateCounter": f"{OWN} (a counter's description, no counts)",
    "CounterService.GetCounter": "a counter's description (no counts): the city's callers, a partner its own",
    "CounterService.ListCounters": "counters' descriptions (no counts): the city's callers, a partner its own",
    "CounterService.ReportCounts": (
        f"{OWN}; published on COUNTS as the partner's agreement gives the optimizer (rounded; withheld or "
        "delayed: not published)"
    ),
    "CounterService.ListCounts": (
        "counts rounded as agreed and ending a delay ago; refused (PERMISSION_DENIED, the reason) when "
        "withheld or the purpose does not fit; counts older than the retention are deleted; audited"
    ),
    "IncidentService.ReportIncident": (
        "a partner's report starts UNVERIFIED; the answer is the reporter's own (a partner: without police notes)"
    ),
    "IncidentService.GetIncident": REPORT + "; one the police never verified NOT_FOUND but to public safety" + AUDITED,
    "IncidentService.ListIncidents": REPORT + "; ones the police never verified listed to public safety only" + AUDITED,
    "IncidentService.UpdateIncident": (
        "a partner's description is not updatable; an unverified report: the police only; the answer "
        "shaped like GetIncident's"
    ),
    "IncidentService.TransitionIncident": (
        "partners' reports: the police verify or reject (with the reason the partner reads); the partner may "
        "withdraw its own; to anyone else an unverified one is NOT_FOUND; the answer shaped like GetIncident's"
    ),
    "IncidentService.WatchIncidents": REPORT + "; ones the police never verified sent to public safety only" + AUDITED,
    "IncidentService.ListIncidentHistory": (
        "a report the police never verified: NOT_FOUND but to public safety; the partner's own entries "
        "without actor and reason when its agreement withholds its reports"
    ),
    "IncidentService.CreatePlannedEvent": NONE,
    "IncidentService.GetPlannedEvent": NONE,
    "IncidentService.ListPlannedEvents": NONE,
    "IncidentService.CancelPlannedEvent": NONE,
    "OptimizerService.GetStatus": f"{NONE} (counts of facilities and vehicles, no occupancy)",
    "OptimizerService.GetNetworkState": (
        "partners' garages rounded as agreed, or without their count (withheld, status only or delayed: "
        "the model is live), marked in `FacilityState.sharing`; audited"
    ),
    "OptimizerService.WatchDecisions": (
        "decisions taken on the optimizer audience's view; they name a garage, never its count"
    ),
    "OptimizerService.GetStrategy": NONE,
    "OptimizerService.SetStrategy": NONE,
    "OptimizerService.ReportVehicles": f"{NONE} (the twin's vehicles)",
    "OptimizerService.ComputeTravelTimes": f"{NONE} (travel times)",
    "OptimizerService.ControlSignals": NONE,
    "ParkingService.CreateFacility": f"{OWN} (a new facility has no count yet)",
    "ParkingService.GetFacility": OCCUPANCY + SINGLE,
    "ParkingService.ListFacilities": OCCUPANCY + LIST,
    "ParkingService.UpdateFacility": f"the answer's occupancy shaped like {OCCUPANCY}",
    "ParkingService.ReportOccupancy": f"{OWN} (its operator, or an engineer writing for it)",
    "ParkingService.RecordGateEvents": f"{OWN} (its operator, or an engineer writing for it)",
    "ParkingService.GetOccupancy": OCCUPANCY + SINGLE,
    "ParkingService.WatchOccupancy": (
        f"{OCCUPANCY}; a delayed audience's changes held back for the delay, a withheld one's not sent"
    ),
    "ParkingService.GetOccupancyHistory": (
        "history rounded as agreed and ending a delay ago; refused when withheld, status only or the "
        "purpose does not fit; history older than the retention is deleted"
    ),
    "ParkingService.Forecast": (
        "made from the history as the caller may read it (ending a delay ago), rounded as agreed; refused "
        "when withheld, status only or the purpose does not fit"
    ),
    "ParkingService.RecommendFacility": f"ranked on and showing what the caller may see: {OCCUPANCY}",
    "PartnerService.CreatePartner": REGISTRY,
    "PartnerService.GetPartner": REGISTRY,
    "PartnerService.ListPartners": REGISTRY,
    "PartnerService.UpdatePartner": REGISTRY,
    "PartnerService.SuspendPartner": REGISTRY,
    "PartnerService.ActivatePartner": REGISTRY,
    "PartnerService.SetAgreement": REGISTRY,
    "PartnerService.GetAgreement": REGISTRY,
    "PartnerService.ListAgreements": REGISTRY,
    "PartnerService.ListAgreementRevisions": REGISTRY,
    "PartnerService.ListAccessRecords": f"{REGISTRY}: who read the partner's data",
    "SignalService.ImportNetwork": NONE,
    "SignalService.GetIntersection": NONE,
    "SignalService.ListIntersections": NONE,
    "SignalService.UpdateIntersection": NONE,
    "SignalService.CreatePlan": NONE,
    "SignalService.GetPlan": NONE,
    "SignalService.ListPlans": NONE,
    "SignalService.ActivatePlan": NONE,
    "SignalService.RollbackPlan": NONE,
    "SignalService.ProposePlan": NONE,
    "SignalService.ApprovePlan": NONE,
    "SignalService.RejectPlan": NONE,
    "SignalService.ApplySteps": NONE,
    "SignalService.ListSteps": NONE,
    "SignalService.ListStepSummaries": NONE,
    "SignalService.RequestPriority": NONE,
    "SignalService.CancelPriority": NONE,
    "SignalService.WatchSignals": NONE,
    "SignalService.ListIntersectionHistory": NONE,
    "WhatIfService.CreateWhatIf": (
        "its live picture reads occupancy as the city's engineers may, for traffic management"
    ),
    "WhatIfService.GetWhatIf": f"{NONE} (simulated outcomes)",
    "WhatIfService.ListWhatIfs": f"{NONE} (simulated outcomes)",
    "WhatIfService.AdoptPlan": NONE,
    "WhatIfService.GetForecastScore": NONE,
}


def table() -> str:
    lines = [
        "## Partners' data on each path",
        "",
        "What each RPC does with the data partners share under their agreements (docs/partners.md).",
        "",
        "| RPC | partners' data |",
        "|---|---|",
        *(f"| `{rpc}` | {rule} |" for rpc, rule in sorted(RULES.items())),
    ]
    return "\n".join(lines) + "\n"
