"""``python -m searchsvc`` runs the CLI."""

from searchsvc.cli import app

app()
