"""FastAPI service: REST API, Label Studio webhook, dashboard (served by `annotator serve`)."""
