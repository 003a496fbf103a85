# These modules fail to import on purpose (a missing dependency, sys.exit, argv parsing): keep
# `pytest --doctest-modules` from importing them.
collect_ignore = ["broken.py", "exits_on_import.py", "parses_argv.py"]
