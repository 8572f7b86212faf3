"""Suite-wide settings: CPU only, offline, few threads (CI has 2 cores)."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402
from proctree import kill_tree  # noqa: E402


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory: pytest.TempPathFactory):
    """Shards of a small synthetic AVE-layout dataset (48 clips, 8 event classes + background, seed 0),
    built once per session through the real `shards synth` + `shards build ave` path.
    Splits: train 34 clips (5 shards of <= 8), val 7, test 7; classes: 9 (background last)."""
    from avpea_dist import plugins
    from avpea_dist.data.builder import BuildOptions
    from avpea_dist.datasets.ave.synth import make_dataset

    base = tmp_path_factory.mktemp("synth")
    make_dataset(base / "ave", 48, seed=0, num_classes=8)
    builder = plugins.load(plugins.dataset_spec("ave").builder)
    builder.build(base / "shards", BuildOptions(workers=2, shard_size=8), progress=False, root=base / "ave")
    return base / "shards"


@pytest.fixture(scope="session")
def valor_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic VALOR-layout set and its caption shards, made once per session through the real
    ``make_valor`` + ``build_valor``: BASE/raw (clips.json, videos/*.mp4; 16 clips, seed 1, 32 px) and BASE/shards
    (shards of <= 4 clips at 32 px, evenly sampled frames, with their text folder). Read only: the retrieval
    tests (tests/tasks/test_retrieval_run.py, tests/remote/test_remote_text.py, tests/test_model_folder.py)
    train and search on it; a test that deletes shards copies them first."""
    from avpea_dist.data.build import BuildOptions
    from avpea_dist.datasets.ave.synth import SynthSpec
    from avpea_dist.datasets.valor.build import build_valor
    from avpea_dist.datasets.valor.synth import make_valor

    base = tmp_path_factory.mktemp("valor16")
    make_valor(base / "raw", clips=16, seed=1, spec=SynthSpec(size=32))
    build_valor(base / "raw", base / "raw" / "videos", base / "shards",
                BuildOptions(workers=2, shard_size=4, frame_size=32, sampling="even"), progress=False)
    return base


TWO_RANK_STEPS = 6
_REPO = Path(__file__).resolve().parents[1]


def two_rank_tiny_cmd(shards, out, *extra: str) -> list[str]:
    """The 2-rank tiny run under torchrun of tests/train/test_resume_2rank.py and tests/remote/test_remote_train.py
    (one loader worker a rank, 4 batches an epoch, 6 steps, eval every 3, checkpoints every 2)."""
    from avpea_dist.runtime.ports import free_port

    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(free_port()), "-m", "avpea_dist.train.entry", str(_REPO / "configs" / "avel_tiny.yaml"),
            f"data.shards={shards}", f"train.out={out}", "model.img_size=32", "data.batch_size=2",
            "data.num_workers=1", "data.epoch_batches=4", f"train.steps={TWO_RANK_STEPS}", "train.eval_every=3",
            "train.ckpt_every=2", "train.log_every=1", "train.deterministic=true", "train.progress=false",
            "eval.batch_size=4", "optim.warmup_steps=2", "dist.timeout_s=60", *extra]


@pytest.fixture(scope="session")
def two_rank_cmd():
    """``two_rank_cmd(shards, out, *extra)``: the command line of ``two_rank_reference`` for another run."""
    return two_rank_tiny_cmd


@pytest.fixture(scope="session")
def two_rank_reference(synth_shards, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 2-rank tiny run on the local ``synth_shards`` (run folder), made once per session: the
    reference that test_resume_2rank.py's killed and preempted run and test_remote_train.py's run from s3:// must
    match step for step. Tests only read it."""
    out = tmp_path_factory.mktemp("two_rank") / "a"
    log = out.parent / "a.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(_REPO)}
    with open(log, "ab") as f:
        proc = subprocess.Popen(two_rank_tiny_cmd(synth_shards, out), cwd=_REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=300)
    finally:
        kill_tree(proc)  # timed out: torchrun and its ranks (each in its own session) go
    assert rc == 0, log.read_text()[-3000:]
    return out


# Tests that change the machine they run on (the real Slurm cluster installs slurm-wlm and munge with apt and
# adds a line to /etc/hosts) run only where that is wanted: in CI, or where a person opted in. Anyone else
# running pytest as root gets a skip, not a changed machine.
MACHINE_CHANGES_VAR = "AVPEA_TEST_MACHINE_CHANGES"


def machine_changes_allowed(environ=os.environ) -> bool:
    def on(name: str) -> bool:
        return environ.get(name, "").strip().lower() in ("1", "true", "yes")
    return on("CI") or on(MACHINE_CHANGES_VAR)


@pytest.fixture(scope="session")
def machine_changes() -> None:
    """Request this fixture before any other in a test that installs packages or edits system files: it
    skips the test (one line for the whole session, saying how to opt in) unless CI=true or the opt-in is set."""
    if not machine_changes_allowed():
        pytest.skip(f"changes this machine (apt install of Slurm, /etc/hosts); run with {MACHINE_CHANGES_VAR}=1 "
                    f"or CI=true to include it")


def pytest_report_header(config: pytest.Config) -> str:
    state = "on" if machine_changes_allowed() else f"off (set {MACHINE_CHANGES_VAR}=1 or CI=true to run them)"
    return f"machine-changing tests (Slurm via apt, /etc/hosts): {state}"
