"""swarmupdate: TUF-signed software updates distributed by a swarm of fleet machines."""

__version__ = "0.1.0"
