"""Errors that reach the command line as one line and exit status 2."""


class ConfigError(ValueError):
    """A bad setting, found before any model work; the message names the value and what is valid."""


class TrainingStopped(RuntimeError):
    """A run stopped on purpose (e.g. too many non-finite updates); one line, exit status 1."""


class StoppedBySignal(TrainingStopped):
    """The user asked to stop (SIGINT/SIGTERM): a sweep stops too, instead of counting a failed arm."""


class UsageError(ValueError):
    """A bad command line (a missing or unknown argument); one line, exit status 2."""


class FolderInUse(ConfigError):
    """Another lamina process is writing the run or sweep folder; one line naming it, exit status 2."""


class DiskFull(TrainingStopped):
    """The disk filled up during a write; one line naming the folder and the space needed, exit
    status 1. The last good checkpoint stays, and ``trainer.resume=true`` continues once space is free."""
