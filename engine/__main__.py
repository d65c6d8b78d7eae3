"""``python -m engine`` runs the ``fanz-media`` command."""

from engine.app.cli import main

raise SystemExit(main())
