"""Running lamina inside verl 0.9 (Ray + FSDP2 + vLLM), as a plugin, not a fork.

- ``plugin``: the ``verl.plugins`` entry point verl imports in every process;
- ``estimators``: GiGPO in verl's advantage-estimator registry;
- ``freezing``: lamina's layer selection inside verl's FSDP engine;
- ``rollout``: the per-step rollout (one ``DataProto`` row per trajectory step);
- ``episode_loop``: the whole-history form as a verl ``AgentLoopBase``;
- ``trainer``: ``StepPPOTrainer``, verl's ``RayPPOTrainer`` with a per-step ``fit``;
- ``config`` / ``launch``: verl's config composed from lamina's, validated by verl, launched on Ray.

Nothing here is imported by ``import lamina``; verl is imported only by these modules.
"""
