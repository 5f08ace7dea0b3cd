"""The audit trail: an append-only, hash-chained record of who did what.

Services call ``record(...)``; see ``audit.recorder``. Names that need
the models are resolved lazily so importing this package never touches the app
registry before it is ready.
"""

import importlib

from audit.errors import AuditError

__all__ = ["AuditError", "AuditTarget", "job_context", "record", "verify_chain"]

_LAZY = {
    "AuditTarget": "audit.recorder",
    "record": "audit.recorder",
    "job_context": "audit.context",
    "verify_chain": "audit.verify",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
