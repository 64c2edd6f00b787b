"""An ensemble of a sweep's top-K single-block policies, for evaluation.

The members differ from the base model only in their one trained block, so the ensemble keeps one
model and swaps each member's trained tensors in (``param.data`` pointers, no copies per step).
Choose mode: every member's candidate distribution softmax(s / T) is computed and the ensemble
samples from their average (T > 0) or takes its argmax (T = 0: the members' one-hot choices
averaged, i.e. a majority vote, ties broken by the members' average temperature-1 distribution).
Generate mode: every member writes a response, and the action most members chose wins (invalid
responses do not vote; ties go to the better-ranked member); the ensemble returns that member's
response.

    policy = load_ensemble("runs/study/demo", k=3)
    result = evaluate_ensemble("runs/study/demo", k=3)      # also writes ensemble-top3.json
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import Choice, ChoicePolicy, candidate_distribution
from lamina.agents.parsing import parse_action
from lamina.agents.policy import Generation, HFPolicy
from lamina.study.arms import Arm, is_finished
from lamina.study.config import SweepConfig
from lamina.trainer.checkpoint import latest_checkpoint, load_checkpoint

if TYPE_CHECKING:
    from lamina.trainer.config import RunConfig


def majority_vote(actions: Sequence[str | None]) -> int:
    """The index of the member whose action wins: the action most members chose (None: an
    invalid response, which does not vote); ties and all-invalid go to the earliest member."""
    counts = Counter(a for a in actions if a is not None)
    if not counts:
        return 0
    top = max(counts.values())
    return next(i for i, a in enumerate(actions) if a is not None and counts[a] == top)


class EnsemblePolicy:
    """A rollout ``Policy`` (``act`` and ``encode``) that acts by the vote of several members.

    Args:
        model: the base model; it keeps its own tensors between calls.
        tokenizer: its tokenizer.
        members: each member's trained tensors, parameter name -> tensor (names the others do not
            train keep the base value for that member); best-ranked member first.
        mode: ``choose`` or ``generate``, as the members were trained.
        labels: a name per member (``block 15``), for reports.
        micro_batch_size, max_new_tokens, score: as ``ChoicePolicy`` / ``HFPolicy``.
    """

    run_config: RunConfig  # the sweep's shared config; set by load_ensemble (declared, not set here)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        members: Sequence[dict[str, torch.Tensor]],
        *,
        mode: str = "choose",
        labels: Sequence[str] | None = None,
        micro_batch_size: int = 16,
        max_new_tokens: int = 48,
        score: str = "sum",
    ):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if mode not in ("choose", "generate"):
            raise ValueError(f"agent.mode={mode!r}; valid: choose, generate")
        params = dict(model.named_parameters())
        names = sorted(set().union(*members))
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"member tensor {unknown[0]!r} is not a parameter of the model")
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode
        self.labels = list(labels) if labels is not None else [f"member {i}" for i in range(len(members))]
        self._params = [params[n] for n in names]
        base = [p.data for p in self._params]
        self._members = [
            [
                m[n].to(device=p.device, dtype=p.dtype) if n in m else b
                for n, p, b in zip(names, self._params, base, strict=True)
            ]
            for m in members
        ]
        if mode == "choose":
            self._inner: ChoicePolicy | HFPolicy = ChoicePolicy(
                model, tokenizer, micro_batch_size=micro_batch_size, score=score
            )
        else:
            self._inner = HFPolicy(
                model, tokenizer, max_new_tokens=max_new_tokens, micro_batch_size=micro_batch_size
            )
        self.max_response_units = self._inner.max_response_units

    def __len__(self) -> int:
        return len(self._members)

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        return self._inner.encode(messages)

    @contextlib.contextmanager
    def member(self, index: int) -> Iterator[None]:
        """Within the block, the model computes as member ``index``; its own tensors come back after."""
        saved = [p.data for p in self._params]
        for p, tensor in zip(self._params, self._members[index], strict=True):
            p.data = tensor
        try:
            yield
        finally:
            for p, tensor in zip(self._params, saved, strict=True):
                p.data = tensor

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        if self.mode == "choose":
            if any(a is None for a in admissible):
                raise ValueError(
                    "agent.mode=choose needs admissible actions; this environment's action space is open"
                )
            return self.choose(prompts, cast("Sequence[Sequence[str]]", admissible), temperature)  # no None
        return self.vote(prompts, admissible, temperature)

    @torch.no_grad()
    def member_distributions(
        self, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[str]], temperature: float
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per prompt, the members' candidate distributions at T and at T = 1, each (M, K_i)."""
        inner = cast(ChoicePolicy, self._inner)  # mode == "choose"
        continuations = [inner.continuation_ids(actions) for actions in candidates]
        at_t: list[list[torch.Tensor]] = [[] for _ in prompts]
        at_one: list[list[torch.Tensor]] = [[] for _ in prompts]
        for index in range(len(self)):
            with self.member(index):
                scores = inner.candidate_scores(prompts, continuations)
            for i, s in enumerate(scores):
                at_t[i].append(candidate_distribution(s, temperature))
                at_one[i].append(candidate_distribution(s, 1.0))
        return [torch.stack(d) for d in at_t], [torch.stack(d) for d in at_one]

    @torch.no_grad()
    def choose(
        self,
        prompts: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[str]],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[Generation]:
        """One action per prompt from the members' averaged candidate distribution."""
        inner = cast(ChoicePolicy, self._inner)  # mode == "choose"
        dists, soft = self.member_distributions(prompts, candidates, temperature)
        choices: list[Generation] = []
        for actions, d, s in zip(candidates, dists, soft, strict=True):
            probs = d.mean(0)  # (K,)
            if temperature > 0:
                index = int(torch.multinomial(probs, 1, generator=generator))
            else:
                votes = probs == probs.max()
                index = int(torch.argmax(torch.where(votes, s.mean(0), torch.full_like(probs, -1.0))))
            conts = inner.continuation_ids(actions)
            choices.append(
                Choice(
                    response_ids=torch.tensor(conts[index], dtype=torch.long),
                    log_probs=torch.log(probs[index].double()).float().reshape(1),
                    text=inner.template.format(action=actions[index]),
                    action=actions[index],
                    index=index,
                    scores=torch.log(probs),
                    probs=probs,
                    candidates=conts,
                )
            )
        return choices

    @torch.no_grad()
    def vote(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        """Generate mode: each member answers; the majority action's first response is returned."""
        inner = cast(HFPolicy, self._inner)  # mode == "generate"
        answers = []
        for index in range(len(self)):
            with self.member(index):
                answers.append(inner.generate(prompts, temperature=temperature))
        results = []
        for i, allowed in enumerate(admissible):
            parsed = [parse_action(a[i].text, allowed) for a in answers]
            winner = majority_vote([p.action if p.valid else None for p in parsed])
            results.append(answers[winner][i])
        return results

    def log_probs(self, *args, **kwargs):
        raise NotImplementedError("an ensemble policy is for evaluation only; it cannot be trained")


def ranked_blocks(sweep_dir: Path) -> list[int]:
    """The sweep's blocks, best first: by C(k), or by S(k) when C is not defined (same order)."""
    table = Path(sweep_dir) / "contribution.csv"
    if not table.exists():
        raise ValueError(f"{table} does not exist: run `lamina sweep` to the end first")
    with table.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("block", "").isdigit()]

    def key(row: dict) -> float:
        value = row.get("contribution") or row.get("score") or "nan"
        return float(value) if math.isfinite(float(value)) else -math.inf

    return [int(r["block"]) for r in sorted(rows, key=key, reverse=True)]


def sweep_config(sweep_dir: Path) -> SweepConfig:
    """The sweep's recorded settings (``sweep.yaml``)."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.exists():
        raise ValueError(f"{sweep_dir} is not a sweep folder (no sweep.yaml)")
    merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), OmegaConf.load(path))
    return cast(SweepConfig, OmegaConf.to_object(merged))  # a structured config's object: a SweepConfig


def load_ensemble(
    sweep_dir: str | Path, k: int, seed: int | None = None, device: str | None = None
) -> EnsemblePolicy:
    """The ensemble of a finished sweep's K best single-block policies.

    Args:
        sweep_dir: the sweep folder.
        k: how many blocks, best first (``contribution.csv``).
        seed: which seed's arm of each block (default: the smallest finished one).
        device: ``trainer.device`` spec; default the sweep's.
    Returns:
        the ``EnsemblePolicy``; ``policy.run_config`` is the sweep's shared ``RunConfig`` and
        ``policy.labels`` names the members.
    Raises:
        ValueError: K out of range, or a block without a finished arm.
    """
    from lamina.agents.models import load_model, model_num_blocks, resolve_device
    from lamina.trainer.restore import init_chain

    sweep_dir = Path(sweep_dir)
    cfg = sweep_config(sweep_dir)
    ranked = ranked_blocks(sweep_dir)
    if not 1 <= k <= len(ranked):
        raise ValueError(
            f"ensemble={sweep_dir}:{k}: K must be in 1..{len(ranked)} (the blocks the sweep scored)"
        )
    num_blocks = model_num_blocks(cfg.model)
    seeds = [seed] if seed is not None else sorted(cfg.study.seeds)
    members, labels, arm_dirs = [], [], []
    for block in ranked[:k]:
        arm_dir = next(
            (
                sweep_dir / Arm("block", s, block).name(num_blocks)
                for s in seeds
                if is_finished(sweep_dir / Arm("block", s, block).name(num_blocks))
            ),
            None,
        )
        ckpt = latest_checkpoint(arm_dir) if arm_dir is not None else None
        if ckpt is None:
            raise ValueError(
                f"block {block} of {sweep_dir} has no finished arm with a checkpoint for seed(s) {seeds}"
            )
        members.append(load_file(str(ckpt / "trainable.safetensors")))
        labels.append(f"block {block}")
        assert arm_dir is not None  # else ckpt is None, refused above
        arm_dirs.append(arm_dir)
    model, tokenizer = load_model(cfg.model, resolve_device(device or cfg.trainer.device))
    for earlier in init_chain(arm_dirs[0]):  # every arm started from the same init_from chain
        load_checkpoint(earlier, model)
    model.eval()
    policy = EnsemblePolicy(
        model,
        tokenizer,
        members,
        mode=cfg.agent.mode,
        labels=labels,
        micro_batch_size=cfg.rollout.micro_batch_size,
        max_new_tokens=cfg.rollout.max_new_tokens,
        score=cfg.agent.choose_score,
    )
    policy.run_config = cfg.run_config()
    return policy


def evaluate_ensemble(
    sweep_dir: str | Path,
    k: int,
    episodes: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> dict:
    """Evaluates the top-K ensemble on the sweep's held-out episodes (the same tasks as its arms) and
    writes ``<sweep>/ensemble-top<K>.json``; returns that result (``evaluate``'s fields plus
    ``members``)."""
    from lamina.trainer.evaluate import evaluate
    from lamina.trainer.factories import make_runner

    policy = load_ensemble(sweep_dir, k, seed, device)
    cfg = policy.run_config
    episodes = episodes or cfg.eval.episodes
    torch.manual_seed(cfg.trainer.seed)
    count = min(episodes, cfg.rollout.batch_size * cfg.rollout.group_size)
    with make_runner(cfg, count, evaluation=True) as runner:
        result = evaluate(cfg, policy, runner, episodes)
    result["members"] = policy.labels
    (Path(sweep_dir) / f"ensemble-top{k}.json").write_text(json.dumps(result, indent=1))
    return result
