"""Load benchmark: the portal under a real WSGI server, real RQ workers and the sandbox, with
simulated people browsing and accepting while a batch of transfers runs.

Run it with `python manage.py bench_load` (see `transfers/management/commands/bench_load.py`) against
a throwaway database. Nothing here is imported by the portal itself.
"""
