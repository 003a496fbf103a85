"""A module whose own import fails (a dependency the user forgot to install)."""

import batchlaw_no_such_dependency  # noqa: F401
