"""A workload module that parses the command line when imported."""

import argparse

from custom_wl.quadratic import TinyRegression

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
args = parser.parse_args()  # BUG: argv


class W(TinyRegression):
    pass
