"""The one exception the audit trail raises for its own rules."""


class AuditError(Exception):
    """An audit event could not be recorded as asked (bad input, secret, broken chain head).

    Raised before anything is written, or from inside the caller's transaction, so
    the business change it accompanies never commits without its event.
    """
