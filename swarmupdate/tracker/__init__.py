"""The tracker: which peers are in which swarm, with a TTL. A hint only, never trusted.

``wire`` (the announce protocol), ``policy`` (who gets handed out) and ``store`` (swarms with
bounds and expiry) are pure; ``app`` is the HTTP handler and ``service.run_tracker`` serves it.
This module imports nothing, so the tracker client can use ``wire`` without the server.
"""
