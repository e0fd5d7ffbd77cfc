"""Shared pieces of the RTL unit tests (host side) and their cocotb test module."""
