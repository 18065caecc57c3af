"""systemd's ``sd_notify`` protocol without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

The agent runs as a ``Type=notify`` unit: it sends ``READY=1`` once it serves, ``STATUS=...`` as it works,
``WATCHDOG=1`` at half the interval :func:`watchdog_interval` reports, and ``STOPPING=1`` on shutdown. Outside
systemd (no ``$NOTIFY_SOCKET``) every call does nothing and returns False.
"""

from __future__ import annotations

import os
import socket

from swarmupdate.obs.logging import get_logger

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]

_log = get_logger("swarmupdate.sdnotify")


def notify(state: str) -> bool:
    """Send ``state`` (newline-separated ``KEY=value`` assignments) to the service manager.

    ``$NOTIFY_SOCKET`` is a filesystem path or, starting with ``@``, a Linux abstract socket name.

    Returns:
        True when the datagram was sent; False when not running under systemd (no or an unsupported
        ``$NOTIFY_SOCKET``) or when sending failed (logged: systemd may then consider the unit hung).
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        if address:  # e.g. "vsock:..." (systemd >= 254 in VMs): not needed by the agent
            _log.debug("sd_notify_unsupported_socket", address=address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        _log.warning("sd_notify_failed", address=address.replace("\0", "@"), error=str(exc))
        return False
    return True


def ready() -> bool:
    """Tell systemd the service is up (``READY=1``); ``systemctl start`` returns then."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl status`` shows (``STATUS=...``)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    """Keep the watchdog from firing (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when no watchdog applies to us.

    None also when ``$WATCHDOG_PID`` is set to another process (the variable was meant for a parent) or a
    variable is malformed. Ping at about half this interval.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
        pid = os.environ.get("WATCHDOG_PID")
        if pid is not None and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
