"""``python -m streamsql``: the same as the ``streamsql`` command."""
from streamsql.cli import main

raise SystemExit(main())
