"""The fleet agent: configuration, install, and the service that wires store, swarm and trust together."""
