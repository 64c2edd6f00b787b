"""The commands behind ``lamina <command>``: each composes its config, runs the library, writes and
prints what a person reads. ``lamina.cli`` only parses the command line and dispatches here."""
