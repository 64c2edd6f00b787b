"""The Docker files parse (no daemon here): known instructions, sources that exist, the steps the
README promises (CUDA + vLLM + verl + lamina + ALFWorld data on GPU; CPU torch on CPU)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {
    "FROM",
    "ARG",
    "ENV",
    "RUN",
    "COPY",
    "WORKDIR",
    "CMD",
    "ENTRYPOINT",
    "LABEL",
    "EXPOSE",
    "USER",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile.gpu", "Dockerfile.cpu"])
def test_dockerfile_parses_and_copies_what_exists(name):
    steps = instructions(ROOT / "docker" / name)
    assert {word for word, _ in steps} <= INSTRUCTIONS
    words = [w for w, _ in steps]
    assert "FROM" in words and set(words[: words.index("FROM")]) <= {"ARG"}  # only ARGs before FROM
    for word, args in steps:
        if word == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    run = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"pip install [^&]*-e \"?\.", run)
    assert 'alfworld-download --data-dir "$ALFWORLD_DATA"' in run
    assert steps[-1][0] == "CMD"


def test_gpu_image_has_cuda_vllm_verl_and_the_plugin():
    steps = instructions(ROOT / "docker" / "Dockerfile.gpu")
    text = " ".join(args for _, args in steps)
    assert "vllm/vllm-openai" in text  # CUDA, CUDA torch and vLLM that match
    assert '"verl==0.9.*"' in text and "--no-deps -e ." in text
    assert "entry_points(group='verl.plugins')" in text  # the build fails if the plugin is not registered


def test_cpu_image_pins_the_cpu_torch_build():
    text = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert "download.pytorch.org/whl/cpu" in text and '".[test,verl]"' in text


def test_gpu_smoke_script_is_valid_bash_and_its_entry_point_imports():
    script = ROOT / "scripts" / "gpu_smoke.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "python -m lamina.integrations.verl.launch" in script.read_text()
    # Imported for real in a fresh interpreter: a module that exists but fails to import fails here.
    code = "from lamina.integrations.verl.launch import main, run, validate; print(main.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "lamina.integrations.verl.launch"
