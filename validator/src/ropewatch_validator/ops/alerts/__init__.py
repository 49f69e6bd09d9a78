"""Alerts, one job per module: ``model`` (the typed alert), ``rules`` (the rules file and the evaluation
of a report against it), ``messages`` (the bytes each webhook format gets), ``delivery`` (HTTP through
the history store's outbox)."""
