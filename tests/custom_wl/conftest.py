# broken.py fails to import on purpose (a missing dependency): keep `pytest --doctest-modules` from importing it.
collect_ignore = ["broken.py"]
