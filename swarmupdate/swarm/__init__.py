"""The sans-I/O swarm core: bitfields, peer state, chunk picking, the download state machine.

::

    bitfield.py   Bitfield: which chunks a peer holds, and its wire form
    events.py     events into the state machine, actions out of it (frozen dataclasses)
    policy.py     who pulls a chunk from the origin, and when (hash threshold, fallback wait)
    picker.py     chunk sets as ints, availability counts, rarest-first order
    peers.py      the peer table: scores, backoff, drops, bans
    config.py     DownloadConfig: the knobs
    download.py   Download: the state machine (re-exports the events and DownloadConfig)
    ratelimit.py  TokenBucket for per-agent byte limits

Nothing here does I/O or reads a clock: every method that depends on time takes ``now`` (monotonic
seconds) and randomness comes from an injected ``random.Random``. The agent's I/O layer and the
simulator (:mod:`swarmupdate.sim`) drive the same code.
"""
