"""The submit block: accepted so that jobs load, and ignored."""
