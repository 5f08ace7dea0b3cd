"""Distribution's services, in reading order (each owns its writes and audit events):

families (declare, archive) -> subscriptions (a recipient team's accounts) -> discovery (one filtered
ReadImages per source account finds new versions) -> groups (recipient groups, consent) -> approvals
(standing approvals: sign, stop) -> releases (one share per version under the active approval) ->
latest (family and latest tags in each recipient account) -> inventory (each copy, confirmed in the
cloud) -> retention (propose, confirm, delete exactly once).
"""
