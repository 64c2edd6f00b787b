"""The calls of Ray that ``lamina.study.executors._submit_and_wait`` makes, without Ray."""

from __future__ import annotations

from pathlib import Path

GIB = 2**30


class FakeTask:
    """A Ray remote function: ``options`` records the memory asked for, ``remote`` gives a ref."""

    def __init__(self, ray: FakeRay, options: dict | None = None):
        self.ray, self.options_given = ray, options or {}

    def options(self, **options):
        return FakeTask(self.ray, options)

    def remote(self, cfg, cpus):
        name = Path(cfg.trainer.output_dir).name
        if "memory" in self.options_given:
            self.ray.memory[name] = self.options_given["memory"]
        self.ray.running.append(name)
        self.ray.submissions.append(list(self.ray.running))
        return cfg.trainer.output_dir


class FakeRay:
    """Ray's calls that ``_submit_and_wait`` makes: arms finish in the order they were submitted,
    each after a second, or, given ``error``, the first arm to finish raised it. ``memory`` is what
    each arm asked for (bytes); ``submissions`` lists, at each submission, the arms then running."""

    def __init__(self, error: Exception | None = None, resources: dict[str, float] | None = None):
        self.error, self.cancelled, self.memory = error, [], {}
        self.resources = resources or {"CPU": 64.0, "memory": 1024.0 * GIB}
        self.running: list[str] = []
        self.submissions: list[list[str]] = []

    def cluster_resources(self):
        return dict(self.resources)

    def remote(self, **resources):
        return lambda fn: FakeTask(self)

    def wait(self, refs, num_returns, timeout=None):
        for ref in refs[:num_returns]:
            self.running.remove(Path(ref).name)
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if self.error is None:
            return 1.0
        err = RuntimeError(f"ray task {ref} failed")
        err.cause = self.error  # as RayTaskError carries the arm's own exception
        raise err

    def cancel(self, ref, force):
        self.cancelled.append(Path(ref).name)
