"""The sans-I/O swarm core: bitfields, peer state, chunk picking, the download state machine."""
