"""The service kit: what every service of the platform shares."""
