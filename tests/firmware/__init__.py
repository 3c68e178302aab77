"""Tests of the node firmware (firmware/peergrid_node) on CPython and MicroPython."""
