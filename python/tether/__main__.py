"""`python -m tether`: the `tether` command."""

from tether.cli import main

raise SystemExit(main())
