"""`python -m adaptive_scheduler` is the `adaptive-scheduler` command."""

from __future__ import annotations

import sys

from adaptive_scheduler.cli import main

sys.exit(main())
