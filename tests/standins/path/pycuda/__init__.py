"""Stand-in pycuda for an agent subprocess in tests (no GPU here): see driver.py."""
