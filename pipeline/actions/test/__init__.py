"""The test block: lava-test-shell."""
