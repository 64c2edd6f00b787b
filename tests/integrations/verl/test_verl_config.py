"""lamina's RunConfig -> verl's PPO config: the composed config passes verl's own validation, the
keys land where verl reads them, and bad values are one-line ConfigErrors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lamina.compose import config_dir
from lamina.errors import ConfigError
from lamina.integrations.verl.config import VerlBackendConfig, worker_env
from lamina.integrations.verl.freezing import LayerSelection
from lamina.integrations.verl.launch import runtime_env, split_run_config, validate
from lamina.trainer.config import RunConfig

MODEL = "/models/does-not-need-to-exist"  # verl's validation reads no weights


def gigpo_config(**rollout) -> RunConfig:
    cfg = RunConfig()
    cfg.algorithm.estimator = "gigpo"
    cfg.algorithm.loss.kl_coef = 0.01
    cfg.agent.mode = "generate"
    cfg.layers = [14]
    cfg.rollout.batch_size, cfg.rollout.group_size = (
        rollout.get("batch_size", 16),
        rollout.get("group_size", 8),
    )
    return cfg


def test_composed_config_passes_verl_validation_and_maps_keys():
    verl_cfg = VerlBackendConfig(n_gpus_per_node=2, mini_batches=4, micro_batch_size=4)
    config = validate(gigpo_config(), verl_cfg, model_path=MODEL)
    arr = config.actor_rollout_ref
    assert config.algorithm.adv_estimator == "gigpo"
    assert config.algorithm.gigpo.gamma == 0.95 and config.algorithm.gigpo.step_weight == 1.0
    assert config.data.train_batch_size == 16 and arr.rollout.n == 8
    assert arr.actor.use_kl_loss and arr.actor.kl_loss_coef == 0.01 and arr.actor.kl_loss_type == "low_var_kl"
    assert arr.actor.ppo_mini_batch_size == 4 and arr.model.path == MODEL
    assert arr.rollout.agent.agent_loop_manager_class == "lamina.integrations.verl.trainer.StepRolloutManager"
    assert config.trainer.use_v1 is False and config.trainer.total_training_steps == 4
    assert LayerSelection.from_env(worker_env(config)).layers == [14]
    env = runtime_env(config)["env_vars"]
    assert env["VERL_ENGINE_VENDOR"] == "lamina" and "LAMINA_VERL_LAYERS" in env


def test_verl_dataclasses_accept_the_sections_workers_build():
    from verl.utils.config import omega_conf_to_dataclass

    config = validate(
        gigpo_config(), VerlBackendConfig(n_gpus_per_node=8, micro_batch_size=2), model_path=MODEL
    )
    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert rollout.n == 8 and actor.strategy == "fsdp2"


def test_published_recipe_preset_composes():
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        raw = compose(config_name="train", overrides=["+verl=gigpo_alfworld", "layers=[14]"])
    raw.model.path = MODEL  # the preset names Qwen/Qwen2.5-1.5B-Instruct (not downloaded in tests)
    raw.model.name = "custom"
    cfg, verl_cfg = split_run_config(raw)
    assert cfg.backend == "verl" and cfg.env.name == "alfworld" and cfg.env.max_steps == 50
    assert cfg.agent.history == 2 and cfg.rollout.invalid_penalty == 0.1 and cfg.trainer.iterations == 150
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lamina.agents.models.model_num_blocks", lambda model_cfg: 28)  # Qwen2.5-1.5B's depth
        config = validate(cfg, verl_cfg, model_path=MODEL)
    arr = config.actor_rollout_ref
    assert arr.actor.optim.lr == 1e-6 and arr.actor.kl_loss_coef == 0.01 and arr.rollout.temperature == 1.0
    assert arr.rollout.val_kwargs.temperature == 0.4 and config.trainer.total_training_steps == 150
    assert config.data.train_batch_size == 16 and arr.rollout.n == 8 and config.algorithm.gigpo.gamma == 0.95


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, v: setattr(c, "layers", [40]), "L=30"),
        (lambda c, v: setattr(c.agent, "mode", "choose"), "agent.mode='choose'"),
        (lambda c, v: setattr(c.algorithm, "estimator", "ppo"), "algorithm.estimator='ppo'"),
        (lambda c, v: setattr(v, "rollout_engine", "hf"), "verl.rollout_engine='hf'"),
        (lambda c, v: setattr(v, "mini_batches", 3), "verl.mini_batches=3"),
        # verl's own check: 16 x 8 trajectories do not split over 3 GPUs
        (
            lambda c, v: setattr(v, "n_gpus_per_node", 3),
            "verl rejected the composed config: real_train_batch_size",
        ),
        (lambda c, v: v.overrides.append("trainer.no_such_key=1"), "not a verl config key"),
        # FSDP1's flat parameters cannot mix trainable and frozen tensors (torch refuses at wrap time)
        (lambda c, v: (setattr(v, "strategy", "fsdp"), setattr(c, "modules", "attn")), "verl.strategy=fsdp"),
        (
            lambda c, v: (setattr(v, "strategy", "fsdp"), setattr(c.trainer, "train_lm_head", True)),
            "train_lm_head=True",
        ),
    ],
)
def test_bad_values_are_one_line_errors(change, message):
    cfg, verl_cfg = gigpo_config(), VerlBackendConfig(n_gpus_per_node=2)
    change(cfg, verl_cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg, verl_cfg, model_path=MODEL)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_fsdp1_accepts_whole_blocks():
    cfg, verl_cfg = gigpo_config(), VerlBackendConfig(n_gpus_per_node=2, strategy="fsdp")
    config = validate(cfg, verl_cfg, model_path=MODEL)
    assert config.actor_rollout_ref.actor.strategy == "fsdp"


def test_dr_grpo_maps_to_verl_grpo_without_std():
    cfg = gigpo_config()
    cfg.algorithm.estimator = "dr_grpo"
    config = validate(cfg, VerlBackendConfig(n_gpus_per_node=2), model_path=MODEL)
    assert config.algorithm.adv_estimator == "grpo" and config.algorithm.norm_adv_by_std_in_grpo is False
    assert config.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum-norm"
    assert OmegaConf.select(config, "lamina.env.name") == "textworld"


def test_backend_section_is_read_from_a_run_config_that_carries_it():
    from dataclasses import dataclass, field

    from lamina.integrations.verl.launch import backend_config

    @dataclass
    class WithVerl(RunConfig):
        verl: VerlBackendConfig = field(default_factory=lambda: VerlBackendConfig(n_gpus_per_node=4))

    assert backend_config(WithVerl()).n_gpus_per_node == 4
    assert backend_config(RunConfig()) == VerlBackendConfig()
    as_mapping = OmegaConf.create({"verl": {"ray_address": "auto", "mini_batches": 2}})
    assert backend_config(as_mapping).ray_address == "auto"


def test_evaluation_sampling_follows_eval_temperature():
    from lamina.integrations.verl.trainer import StepRolloutManager

    cfg = gigpo_config()
    cfg.eval.temperature = 0.0
    config = validate(cfg, VerlBackendConfig(n_gpus_per_node=2), model_path=MODEL)
    manager = StepRolloutManager(config, llm_client=None, tokenizer=object())
    assert manager.sampling_params()["temperature"] == 1.0
    assert manager.sampling_params()["max_tokens"] == config.data.max_response_length
    assert manager.sampling_params(validate=True)["temperature"] == 0.0  # greedy


class _FakeRay:
    """Stands in for Ray so that ``lamina train backend=verl`` can be followed on CPU up to the
    point where verl's trainer would start (it needs GPUs and vLLM); records what it was given."""

    def __init__(self):
        self.init_kwargs, self.configs, self.actor_options = None, [], None

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.init_kwargs = kwargs

    def remote(self, **_):
        run = SimpleNamespace(remote=self.configs.append)  # runner.run.remote(config)
        actor = SimpleNamespace(remote=lambda: SimpleNamespace(run=run))

        def options(**kwargs):
            self.actor_options = kwargs
            return actor

        return lambda cls: SimpleNamespace(remote=actor.remote, options=options)

    def get(self, value):
        return value


def test_lamina_train_backend_verl_routes_to_the_launcher(tmp_path, monkeypatch, capsys):
    import ray
    from transformers import LlamaConfig

    from lamina.cli import main

    fake = _FakeRay()
    for name in ("is_initialized", "init", "remote", "get"):
        monkeypatch.setattr(ray, name, getattr(fake, name))
    model = tmp_path / "model"
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    LlamaConfig(num_hidden_layers=16, **shape).save_pretrained(model)
    out = tmp_path / "verl-run"
    code = main(
        argv := [
            "train",
            "backend=verl",
            "algorithm=gigpo",
            "agent.mode=generate",
            "layers=[14]",
            f"model.path={model}",
            "rollout.batch_size=16",
            "rollout.group_size=8",
            "verl.n_gpus_per_node=2",
            "verl.ray_address=ray://head:10001",
            f"trainer.output_dir={out}",
        ]
    )
    assert code == 0
    assert fake.init_kwargs["address"] == "ray://head:10001"
    assert fake.init_kwargs["runtime_env"]["env_vars"]["VERL_ENGINE_VENDOR"] == "lamina"
    # the task runner carries the worker variables itself (for a Ray started by someone else)
    assert fake.actor_options["runtime_env"]["env_vars"]["VERL_ENGINE_VENDOR"] == "lamina"
    (config,) = fake.configs
    assert config.algorithm.adv_estimator == "gigpo" and config.actor_rollout_ref.model.path == str(model)
    assert (out / "config.yaml").exists()
    assert OmegaConf.load(out / "verl_config.yaml").data.train_batch_size == 16
    # The folder now holds a run: a second one is refused before Ray is asked for anything.
    fake.configs.clear()
    assert main(argv) == 2 and not fake.configs
    assert "trainer.resume=true" in capsys.readouterr().err


def test_lamina_train_backend_verl_refuses_choose_mode_in_one_line(tmp_path, capsys):
    from lamina.cli import main

    code = main(["train", "backend=verl", f"model.path={MODEL}", f"trainer.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "agent.mode" in err and "\n" not in err


def test_attention_is_sdpa_unless_flash_attn_is_installed(monkeypatch):
    import importlib.util

    from lamina.integrations.verl.config import attention

    real = importlib.util.find_spec

    def flash_attn_installed(installed: bool):
        fake = object() if installed else None
        return lambda name, *a: fake if name == "flash_attn" else real(name)

    monkeypatch.setattr(importlib.util, "find_spec", flash_attn_installed(False))
    assert attention("auto") == "sdpa" and attention("eager") == "eager"
    cfg, verl_cfg = gigpo_config(), VerlBackendConfig(n_gpus_per_node=2)
    config = validate(cfg, verl_cfg, model_path=MODEL)
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", flash_attn_installed(True))
    assert attention("auto") == "flash_attention_2"


def test_an_update_on_verls_own_engine_stops_a_layer_selected_run():
    from lamina.integrations.verl.trainer import require_layer_selection

    require_layer_selection({"actor/lamina_trainable_tensors": [9.0], "actor/pg_loss": [0.1]}, [14])
    require_layer_selection({"actor/pg_loss": [0.1]}, None)  # no selection asked: verl's engine is fine
    with pytest.raises(RuntimeError, match=r"layers=\[14\]: the actor update ran on verl's own engine"):
        require_layer_selection({"actor/pg_loss": [0.1]}, [14])


@pytest.mark.parametrize(
    ("choice", "free_cache_engine", "sync"),
    [
        ("auto", True, "all"),
        ("auto", False, "trainable"),
        ("all", False, "all"),
        ("trainable", False, "trainable"),
    ],
)
def test_weight_sync_sends_trainable_tensors_only_to_servers_that_keep_weights(
    choice, free_cache_engine, sync
):
    overrides = [f"actor_rollout_ref.rollout.free_cache_engine={str(free_cache_engine).lower()}"]
    verl_cfg = VerlBackendConfig(n_gpus_per_node=2, weight_sync=choice, overrides=overrides)
    config = validate(gigpo_config(), verl_cfg, model_path=MODEL)
    selection = LayerSelection.from_env(worker_env(config))
    assert selection is not None and selection.sync == sync and selection.layers == [14]


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("trainable", "verl.weight_sync=trainable: the rollout servers free their weights"),
        ("some", "verl.weight_sync='some'; valid: auto, trainable, all"),
    ],
)
def test_weight_sync_refusals_are_one_line(choice, message):
    with pytest.raises(ConfigError) as err:
        validate(gigpo_config(), VerlBackendConfig(n_gpus_per_node=2, weight_sync=choice), model_path=MODEL)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
