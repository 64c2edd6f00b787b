"""Writes data/verl_agent_gigpo_reference.json: GiGPO advantages computed by the authors' own code.

Source: verl-agent's ``gigpo/core_gigpo.py`` from the fork https://github.com/vanzll/verl-agent at
commit d0b97244c50f17fb43a6ef0a15bca0e95a044ff7 (git blob id in ``BLOB`` below; the file is the
one verl-agent's trainer imports). The file is loaded as it is, not copied, and two of its
functions are run on fixed random batches, the way verl-agent's ``ray_trainer.py`` runs them:

- ``compute_step_discounted_returns(batch, gamma)`` gives the step returns R_t (float32);
- ``compute_gigpo_outcome_advantage(token_level_rewards, step_rewards, response_mask, anchor_obs,
  index, traj_index, step_advantage_w=w, mode=..., enable_similarity=..., similarity_thresh=...)``
  gives the advantages. ``token_level_rewards`` carries each row's episode return on its last
  response token (verl-agent's rollout sums the episode's rewards in float32 and its episode reward
  manager puts that sum on every step row).

Settings: ``mode`` mean_std_norm / mean_norm (lamina's ``norm`` std / none), gamma 0.95, 0.5 and 1,
w 1 and 0.5, exact anchors and similarity clustering (thresholds 0.6, 0.9), and both episode
statistics: verl-agent's trainer always runs ``episode_norm_reward`` with its default
``compute_mean_std_cross_steps=True`` (lamina's ``episode_stats=steps``); for
``episode_stats=trajectory`` the same unmodified ``compute_gigpo_outcome_advantage`` runs with the
module's ``episode_norm_reward`` bound to ``compute_mean_std_cross_steps=False``.

Two departures of lamina are kept out of the batches, and noted in the JSON:
- every group holds >= 2 trajectories: verl-agent gives a group of one row the advantage R / (1 +
  eps) (mean 0, std 1), lamina 0;
- a batch is redrawn when a group or anchor cluster of >= 2 members has (nearly) equal values in
  float64 (std <= FLAT * (1 + max |v|)) under any setting: verl-agent computes in float32, so on
  equal values its rounding noise divided by eps can become an advantage where lamina gives 0 by
  design, and on near-equal ones its float32 error is amplified by 1 / std.

Rewards are multiples of 1/64 in [-0.5, 0.5] (plus a success bonus of 10 on some last steps), so
float32 holds them and their sums exactly; the float32 results then agree with lamina's float64
ones to 1e-6 * (1 + |A|).

Run once, with torch, numpy and verl (for ``DataProto``) installed:

    git clone https://github.com/vanzll/verl-agent /tmp/verl-agent
    git -C /tmp/verl-agent checkout d0b97244c50f17fb43a6ef0a15bca0e95a044ff7
    python tests/algorithms/make_verl_agent_reference.py /tmp/verl-agent/gigpo/core_gigpo.py

or ``--git-dir DIR`` to read the file from a git directory at ``COMMIT`` without a checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = "https://github.com/vanzll/verl-agent"
COMMIT = "d0b97244c50f17fb43a6ef0a15bca0e95a044ff7"
PATH = "gigpo/core_gigpo.py"
BLOB = "116dab941157c4236d4228de39346273694a0695"  # git rev-parse COMMIT:PATH
OUT = Path(__file__).parent / "data" / "verl_agent_gigpo_reference.json"
SEED = 20
N_BATCHES = 12
RESPONSE_LENGTH = 4
FLAT = 0.05  # a cluster with std <= FLAT * (1 + max |v|) counts as near-flat: the batch is redrawn

# (norm, episode_stats, gamma, step_weight, anchor_similarity)
SETTINGS = [
    (norm, stats, gamma, w, None)
    for norm in ("std", "none")
    for stats in ("steps", "trajectory")
    for gamma, w in ((0.95, 1.0), (0.5, 0.5), (1.0, 1.0))
] + [
    ("std", "steps", 0.95, 1.0, 0.6),
    ("std", "steps", 0.95, 1.0, 0.9),
    ("none", "steps", 0.95, 1.0, 0.6),
    ("none", "steps", 0.5, 0.5, 0.9),
    ("std", "trajectory", 0.95, 1.0, 0.6),
]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_core_gigpo(source: bytes):
    """Imports the file's bytes as a module (it imports numpy, torch and verl's DataProto)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "core_gigpo.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("verl_agent_core_gigpo", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def draw_batch(rng: np.random.Generator) -> dict:
    """2-3 groups of 2-4 trajectories of 1-5 steps; rows step-major, as verl-agent's rollout."""
    pool = ["".join(rng.choice(list("ab"), size=int(rng.integers(3, 7)))) for _ in range(8)]
    trajs = []
    for g in range(int(rng.integers(2, 4))):
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.integers(1, 6))
            rewards = rng.integers(-32, 33, size=length) / 64
            if rng.random() < 0.4:
                rewards[-1] += 10.0  # a success bonus on the last step
            rewards = [float(r) for r in rewards]  # float32-exact: both sides see the same inputs
            anchors = [str(rng.choice(pool)) for _ in range(length)]
            trajs.append((f"g{g}", f"t{len(trajs)}", rewards, anchors))
    rows = {"rewards": [], "traj_uid": [], "step_id": [], "uid": [], "anchor": []}
    for step in range(5):
        for uid, traj, rewards, anchors in trajs:
            if step < len(rewards):
                rows["rewards"].append(rewards[step])
                rows["traj_uid"].append(traj)
                rows["step_id"].append(step)
                rows["uid"].append(uid)
                rows["anchor"].append(anchors[step])
    return rows


def verl_agent_inputs(core, batch: dict, gamma: float, rng: np.random.Generator) -> dict:
    from verl import DataProto

    n = len(batch["rewards"])
    traj = np.array(batch["traj_uid"], dtype=object)
    episode = {}
    for r, t in zip(batch["rewards"], batch["traj_uid"], strict=True):
        episode[t] = np.float32(episode.get(t, np.float32(0.0)) + np.float32(r))  # float32, as the rollout
    lengths = rng.integers(1, RESPONSE_LENGTH + 1, size=n)
    mask = (torch.arange(RESPONSE_LENGTH)[None, :] < torch.as_tensor(lengths)[:, None]).float()
    token_rewards = torch.zeros(n, RESPONSE_LENGTH)
    for i in range(n):
        token_rewards[i, lengths[i] - 1] = float(episode[batch["traj_uid"][i]])
    data = DataProto.from_dict(
        tensors={"input_ids": torch.zeros(n, 1, dtype=torch.long)},
        non_tensors={
            "rewards": np.array(batch["rewards"], dtype=np.float32),
            "traj_uid": traj,
            "active_masks": np.ones(n, dtype=bool),
        },
    )
    return {
        "token_level_rewards": token_rewards,
        "step_rewards": core.compute_step_discounted_returns(data, gamma),
        "response_mask": mask,
        "anchor_obs": np.array(batch["anchor"], dtype=object),
        "index": np.array(batch["uid"], dtype=object),
        "traj_index": traj,
    }


def run_verl_agent(core, batch: dict, setting: tuple, rng: np.random.Generator) -> list[float]:
    norm, stats, gamma, w, similarity = setting
    inputs = verl_agent_inputs(core, batch, gamma, rng)
    original = core.episode_norm_reward
    if stats == "trajectory":
        core.episode_norm_reward = functools.partial(original, compute_mean_std_cross_steps=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the mean step-group size
            advantages, _ = core.compute_gigpo_outcome_advantage(
                **inputs,
                step_advantage_w=w,
                mode="mean_std_norm" if norm == "std" else "mean_norm",
                enable_similarity=similarity is not None,
                similarity_thresh=similarity if similarity is not None else 0.95,
            )
    finally:
        core.episode_norm_reward = original
    mask = inputs["response_mask"].bool()
    rows = advantages[:, 0]
    # one advantage per row, on every response token and nowhere else
    assert torch.equal(advantages, rows[:, None] * mask), "verl-agent's advantage is not per row"
    return [float(f"{float(a):.9g}") for a in rows]


def partition(core, batch: dict, similarity: float | None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        uids = core.build_step_group(
            np.array(batch["anchor"], dtype=object),
            np.array(batch["uid"], dtype=object),
            similarity is not None,
            similarity if similarity is not None else 0.95,
        )
    return np.unique(uids.astype(str), return_inverse=True)[1]


def near_flat(values: np.ndarray, clusters: np.ndarray) -> bool:
    """Some cluster of >= 2 members whose float64 values (nearly) agree."""
    for c in np.unique(clusters):
        v = values[clusters == c]
        if len(v) > 1 and v.std(ddof=1) <= FLAT * (1 + np.abs(v).max()):
            return True
    return False


def clean(core, batch: dict) -> bool:
    """No group or anchor cluster with (nearly) equal values, in float64, under any setting."""
    rewards = np.array(batch["rewards"], dtype=np.float64)
    traj = np.unique(batch["traj_uid"], return_inverse=True)[1]
    group = np.unique(batch["uid"], return_inverse=True)[1]
    returns = np.bincount(traj, weights=rewards)
    traj_group = np.zeros(len(returns), dtype=np.int64)
    traj_group[traj] = group
    if near_flat(returns[traj], group) or near_flat(returns, traj_group):
        return False
    steps = np.array(batch["step_id"])
    for _, _, gamma, _, similarity in SETTINGS:
        later = (traj[None, :] == traj[:, None]) & (steps[None, :] >= steps[:, None])  # [row, k]
        discount = np.where(later, gamma ** np.maximum(steps[None, :] - steps[:, None], 0), 0.0)
        step_returns = discount @ rewards
        if near_flat(step_returns, partition(core, batch, similarity)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("core_gigpo", nargs="?", help="path to verl-agent's gigpo/core_gigpo.py at COMMIT")
    parser.add_argument("--git-dir", help="a verl-agent git directory holding COMMIT")
    args = parser.parse_args()
    if args.git_dir:
        source = subprocess.run(
            ["git", "--git-dir", args.git_dir, "show", f"{COMMIT}:{PATH}"], check=True, capture_output=True
        ).stdout
    elif args.core_gigpo:
        source = Path(args.core_gigpo).read_bytes()
    else:
        parser.error("give the path of core_gigpo.py or --git-dir")
    blob = git_blob_id(source)
    if blob != BLOB:
        sys.exit(f"{PATH} has git blob {blob}, expected {BLOB} ({REPO} at {COMMIT})")
    core = load_core_gigpo(source)

    rng = np.random.default_rng(SEED)
    batches, redrawn = [], 0
    while len(batches) < N_BATCHES:
        batch = draw_batch(rng)
        if clean(core, batch):
            batches.append(batch)
        else:
            redrawn += 1
    settings = []
    for setting in SETTINGS:
        norm, stats, gamma, w, similarity = setting
        settings.append(
            {
                "lamina": {
                    "norm": norm,
                    "episode_stats": stats,
                    "gamma": gamma,
                    "step_weight": w,
                    "anchor_similarity": similarity,
                },
                "verl_agent": {
                    "mode": "mean_std_norm" if norm == "std" else "mean_norm",
                    "compute_mean_std_cross_steps": stats == "steps",
                    "gamma": gamma,
                    "step_advantage_w": w,
                    "enable_similarity": similarity is not None,
                    "similarity_thresh": similarity if similarity is not None else 0.95,
                    "epsilon": 1e-6,
                },
                "advantages": [run_verl_agent(core, batch, setting, rng) for batch in batches],
            }
        )
    out = {
        "source": f"{REPO} at {COMMIT}, {PATH} (git blob {BLOB}), loaded unmodified",
        "repo": REPO,
        "commit": COMMIT,
        "path": PATH,
        "blob": BLOB,
        "functions": ["compute_step_discounted_returns", "compute_gigpo_outcome_advantage"],
        "generator": "tests/algorithms/make_verl_agent_reference.py",
        "seed": SEED,
        "redrawn_batches": redrawn,
        "notes": [
            "advantages: one value per row (verl-agent puts it on every response token), float32 "
            "results printed with 9 significant digits",
            "rewards are multiples of 1/64 (+10): float32-exact, as are their sums; token_level_rewards "
            "carry the float32 episode return",
            "every group has >= 2 trajectories (verl-agent gives a one-row group R / (1 + eps), lamina 0)",
            f"batches with a group or anchor cluster of >= 2 values with std <= {FLAT} * (1 + max |v|) "
            "in float64 were redrawn (verl-agent's float32 noise / eps; lamina gives 0 on equal values)",
        ],
        "batches": batches,
        "settings": settings,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(batches)} batches, {len(settings)} settings, "
        f"{redrawn} batches redrawn"
    )


if __name__ == "__main__":
    main()
