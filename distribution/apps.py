from django.apps import AppConfig


class DistributionConfig(AppConfig):
    name = "distribution"
    verbose_name = "Distribution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Recipient groups: what points at an account (accounts.dependents), and the share form's
        # "Recipient group" (transfers/recipient_sources.py): transfers may not import distribution.
        from distribution import account_uses
        from distribution.selectors import groups
        from transfers import recipient_sources

        account_uses.register()
        recipient_sources.register(recipient_sources.Provider(prefix=groups.SOURCE_PREFIX,
                                                              choices=groups.group_recipient_sources,
                                                              accounts=groups.group_recipient_accounts))
        # The inventory's rows and the latest pointer's tags follow each completed import (in its
        # transaction); the reconciler's tick runs their schedules and safety nets (transfers/events.py).
        from distribution.services import inventory, latest
        from transfers import events

        events.register_sink(inventory.on_import_completed)
        events.register_sweep(inventory.inventory_sweep)
        events.register_sweep(latest.latest_sweep)
        # Standing approvals past their expiry end; releases whose job was lost are put back.
        from distribution.services import releases

        events.register_sweep(releases.releases_sweep)
        # Retention: the tick proposes a run for each rule with copies to delete, and takes back
        # deletions whose job was lost or whose worker died (services/retention_deletes.py).
        from distribution.services import retention_deletes

        events.register_sweep(retention_deletes.retention_sweep)
        # New versions of families: one scan job per source account due (services/discovery.py).
        from distribution.services import discovery

        events.register_sweep(discovery.discovery_sweep)
