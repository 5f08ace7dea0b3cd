from django.apps import AppConfig


class BenchConfig(AppConfig):
    """The benchmarks and their `bench_*` commands. Installed so `manage.py` finds the commands;
    no model, and nothing of the portal imports this package."""

    name = "bench"
    verbose_name = "Benchmarks"
