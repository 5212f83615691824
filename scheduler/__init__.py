"""adaptive-scheduler: a job daemon that runs RQ jobs on one host under a memory budget."""

from __future__ import annotations

__version__ = "0.1.0"
