"""Kairos: real-time customer data and personalization platform.

Data flows through the packages in the order of their names in the architecture:
``collect`` (HTTP and import) appends to the durable event log in ``store``; the ``profiles`` processor
applies the log in order through ``identity`` resolution into profiles; ``api`` serves it all over HTTP
and ``cli`` from the shell.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
