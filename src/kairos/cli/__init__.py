"""The ``kairos`` command line (Typer + Rich)."""

from __future__ import annotations

from kairos.cli.main import app, main

__all__ = ["app", "main"]
