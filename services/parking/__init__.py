"""ParkingService: facilities, live occupancy, history and guidance (almere.parking.v1)."""
