"""A workload module written as a script: it exits when imported."""

import sys

from custom_wl.quadratic import TinyRegression  # noqa: F401

sys.exit("run me as a script")  # BUG: exit
