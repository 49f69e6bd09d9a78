"""Running in production: history store, alert rules and webhooks, scheduled multi-job runs."""
