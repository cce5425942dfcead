"""The command block: a command the device's administrator listed, run on the dispatcher."""
