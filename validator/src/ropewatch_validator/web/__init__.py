"""`ropewatch serve`: the read-only dashboard over the history store (Starlette + Jinja2, uvicorn)."""
