"""``python -m engine`` runs the ``fanz-media`` command."""

from engine.cli import main

raise SystemExit(main())
