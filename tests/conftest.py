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
