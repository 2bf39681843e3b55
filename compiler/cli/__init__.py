"""The `vlc` command line: one module per command group, one output module (console)."""
