"""``python -m genmodels``: the ``genmodels`` command."""

from genmodels.cli import main

raise SystemExit(main())
