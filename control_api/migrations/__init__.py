"""Versioned SQL migrations, applied in order by control_api.db.migrate."""
