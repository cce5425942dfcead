"""Action pieces several methods share: downloads, the LAVA overlay, the console, the shell steps."""
