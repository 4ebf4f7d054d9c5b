"""Test helpers: real servers on free ports, started and stopped by fixtures."""
