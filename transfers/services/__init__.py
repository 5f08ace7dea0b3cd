"""Every write on shares, exports and recipients goes through these services.

Each checks the rule it owns, moves state with a conditional update, records
its audit event in the same transaction and enqueues the next step on commit.

A share, in reading order: requests.py (request, approve, reject, cancel), preflight.py (the
checks before approval, each account with its own keys), exports.py (the export, its sweep, the
offer), export_starts.py (its start), export_cancels.py (the export of a withdrawn share
cancelled), cleanup.py (its files deleted). A recipient, in reading order:
import_offers.py (accept, decline, retry), import_starts.py (the start), import_sweeps.py (the
looks; copy_looks.py places a copy's first look where similar copies ended), import_ends.py
(completed or failed). Around them: polling.py (claims, leases, put-offs),
bounded.py (bounded attempts), binding.py (what an approval binds), reconcile.py (the reconciler).
A recipient in the source's Region skips the export: methods.py (which method each recipient
gets), grants.py (the launch permission granted before its copy; its copy is an import start whose
create is CreateImage{SourceImageId}), grant_releases.py (removed after it, revoked by the source
team, put back by the reconciler), grant_state.py (which grants are still needed).
An external account: external_links.py (a link revealed, or a pasted one imported), object_grants.py
and object_revokes.py (read on the export granted to it by an object ACL, and taken back).

Glossary: the words these modules use for themselves.

- offer: a ready share's recipients become OFFERED; a member of the receiving team accepts or
  declines (a team that auto-accepts accepts at once).
- copy-first: an image the source account does not own is first copied into it
  (``omiportal-copy-<export>``), since OUTSCALE exports only owned images.
- start: the step that asks the cloud to create something: an import's CreateImage, an export's
  copy-first CreateImage or its CreateImageExportTask.
- claim: a conditional UPDATE that takes a row for one run (a start or a sweep), so no other run
  acts on it at the same time.
- lease: the next_poll_at a claim writes, far enough ahead that the reconciler and every other run
  leave the row alone while its run may still be inside its cloud calls; the run's end replaces it.
- look: one read of a row's state in the cloud (ReadImages, ReadImageExportTasks), due at its
  next_poll_at; the interval backs off while the row stays in flight.
- sweep: one job per account and phase (export or import) that looks at every row due there in
  one call, acts on what changed and schedules itself again.
- slot: one cell of the grid, OMIPORTAL_SWEEP_MIN_SECONDS wide, that sweeps are due on; looks
  asked for within one slot share one sweep job.
- rider: a row of the same account that is in flight but not yet due; its id rides in the sweep's
  call for free, and if it has ended it is claimed and handled in that sweep.
- hand-off: the export sweep that sees an export complete offers it, accepts for auto-accepting
  teams and starts those imports itself, within OMIPORTAL_SWEEP_BUDGET_SECONDS; the rest go to
  import_handoff jobs.
- put off, postpone: a throttled start is tried again later, up to polling.MAX_START_ATTEMPTS;
  a throttled look comes back later. Both only while the row is as the run claimed it.
- settle window: a create that got no answer (a read timeout, a dropped connection) holds its row
  for OMIPORTAL_CREATE_SETTLE_SECONDS before the next attempt looks its name up.
- mark: the HMAC the portal writes in the Description of every image it creates
  (outscale/marks.py); an image found under a name the portal chose is adopted (taken as the
  step's result) only if it carries the mark made for that transfer.
- bounded attempts: an error that is not an answer from OUTSCALE counts against its row
  (step_errors); at OMIPORTAL_STEP_MAX_ATTEMPTS the transfer fails instead of coming back.
- reconciler, grace: the periodic job that puts back any step whose next look is more than
  OMIPORTAL_RECONCILE_GRACE_SECONDS (the grace) late, expires what has run out and queues
  clean-ups.
- refusal: an import the portal fails before any cloud call because its account is no longer what
  the approval bound (``import.refused``).
- deadline: when the manifest's pre-signed snapshot links die, 7 days after the export; after it
  only a new export helps.
- grant: launch permission on the source image given by the source account to a same-Region
  recipient's OUTSCALE account (UpdateImage), one LaunchGrant row per share and account; removed
  (revoked) as soon as the copies it served ended, unless kept ("launch permission only").
"""
