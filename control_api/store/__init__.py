"""Data access for the platform's media-facing records, one module per
domain. Every function takes a :class:`control_api.db.Database` (the pool or
an open transaction) and the current time where time matters."""
