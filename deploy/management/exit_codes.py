"""The exit codes of the deploy app's commands besides 0 (done) and 1 (failed, or could not run).

One home, so that a command never imports another command's module for them, and a caller (CI, a runbook) reads
the same number for the same outcome whichever command it ran.
"""

# The run finished and found rows that differ: migrate_from_sqlite --verify, restore_drill.
DIFFERENCES_FOUND = 3
# Another run holds what this one needs, so it started nothing: migrate_from_sqlite on the same target database,
# k8s_deploy --restore while another restore Job runs.
ALREADY_RUNNING = 4
# The work goes on without this run, which stopped waiting: k8s_deploy --restore's Job outlived --timeout.
STILL_RUNNING = 5
