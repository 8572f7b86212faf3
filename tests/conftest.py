"""Suite-wide settings: CPU only, offline, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


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
