"""Occupancy forecasts per parking facility: 15, 30 and 60 minutes ahead with a 10-90 % band, from the
facility's own history (time of day, day type, recent trend), planned events and vehicles already
guided there. No server, bus or database here: the parking service and the benchmark feed it."""

from libs.forecast.days import FacilityDay, PlannedEvent
from libs.forecast.model import HORIZONS_MIN, Forecast, Forecaster
from libs.forecast.profile import Profile

__all__ = ["HORIZONS_MIN", "FacilityDay", "Forecast", "Forecaster", "PlannedEvent", "Profile"]
