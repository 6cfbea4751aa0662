"""``python -m kairos``: the same as the ``kairos`` command."""

from __future__ import annotations

from kairos.cli import main

main()
