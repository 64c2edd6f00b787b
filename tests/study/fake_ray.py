"""The calls of Ray that ``lamina.study.executors._submit_and_wait`` makes, without Ray."""

from __future__ import annotations

from pathlib import Path


class FakeTask:
    """A Ray remote function: ``options`` records the memory asked for, ``remote`` gives a ref."""

    def __init__(self, memory: dict[str, int] | None = None, options: dict | None = None):
        self.memory, self.options_given = memory if memory is not None else {}, options or {}

    def options(self, **options):
        return FakeTask(self.memory, options)

    def remote(self, cfg, cpus):
        if "memory" in self.options_given:
            self.memory[Path(cfg.trainer.output_dir).name] = self.options_given["memory"]
        return cfg.trainer.output_dir


class FakeRay:
    """Ray's calls that ``_submit_and_wait`` makes: every arm ran for a second, or, given
    ``error``, the first arm to finish raised it. ``memory`` is what each arm asked for (bytes)."""

    def __init__(self, error: Exception | None = None):
        self.error, self.cancelled, self.memory = error, [], {}

    def remote(self, **resources):
        return lambda fn: FakeTask(self.memory)

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if self.error is None:
            return 1.0
        err = RuntimeError(f"ray task {ref} failed")
        err.cause = self.error  # as RayTaskError carries the arm's own exception
        raise err

    def cancel(self, ref, force):
        self.cancelled.append(Path(ref).name)
