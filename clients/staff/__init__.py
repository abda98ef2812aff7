"""Staff CLI for municipal officers: the application queue and its actions (`python -m clients.staff`)."""
