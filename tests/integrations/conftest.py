"""Integration tests run real frameworks on the CPU; each module skips cleanly when its framework is absent."""
