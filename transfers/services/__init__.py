"""Every write on shares, exports and recipients goes through these services.

Each checks the rule it owns, moves state with a conditional update, records
its audit event in the same transaction and enqueues the next step on commit.
"""
