"""Tests of the demo: the dashboard generator, the command line, and the demo in a real browser."""
