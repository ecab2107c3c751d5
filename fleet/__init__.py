"""fleet: network USB dongles for a hardware lab."""
