"""Process start-up in one place (avpea_dist/runtime/startup.py), shipped configs by name, and the one-line CLI answers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avpea_dist.runtime import startup
from avpea_dist.presets import find_config

REPO = Path(__file__).resolve().parent.parent


def test_accelerator_is_chosen_once_and_a_users_choice_wins(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert startup.choose_accelerator() == "cuda"
    monkeypatch.delenv("DS_ACCELERATOR")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: CPU, without touching CUDA
    assert startup.choose_accelerator() == "cpu"
    assert __import__("os").environ["DS_ACCELERATOR"] == "cpu"


def test_threads_per_rank_share_the_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert startup.threads_per_rank() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cpus = len(__import__("os").sched_getaffinity(0))
    assert startup.threads_per_rank() == max(1, cpus // 2)


def test_ports():
    assert startup.rendezvous_port("123456", 29500) == 20000 + 123456 % 20000
    assert startup.rendezvous_port(None, 29500) == 29500 and startup.rendezvous_port("12_3", 6379) == 6379
    assert 0 < startup.free_port() < 65536


def test_start_up_decisions_live_in_runtime_only():
    """The accelerator and logging set-up are decided in runtime/startup.py, the port helpers in runtime/ports.py,
    and nowhere else."""
    offenders = []
    deciders = {REPO / "avpea_dist" / "runtime" / name for name in ("startup.py", "ports.py")}
    for path in (REPO / "avpea_dist").rglob("*.py"):
        if path in deciders:
            continue
        text = path.read_text()
        for needle in ('environ.setdefault("DS_ACCELERATOR"', 'environ["DS_ACCELERATOR"] =', "logging.basicConfig(",
                       "def _free_port", "% 20000"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


def test_shipped_configs_are_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: the name, and the checkout-relative path, still work
    for name in ("avel_tiny", "avel_tiny.yaml", "configs/avel_tiny.yaml"):
        assert find_config(name).is_file() and find_config(name).name == "avel_tiny.yaml"
    own = tmp_path / "avel_tiny.yaml"
    own.write_text("model:\n  bottleneck: 8\n")
    assert find_config("avel_tiny.yaml") == Path("avel_tiny.yaml")  # a file that exists is taken as given


def test_train_without_arguments_asks_for_the_config_only(capsys):
    from avpea_dist.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and err == "avpea train: error: the following arguments are required: config"


def test_unknown_config_name_is_one_line(capsys):
    from avpea_dist.cli import main

    assert main(["model-info", "no_such_config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_config" in err[0] and "avel_tiny" in err[0]


_SIGINT_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from avpea_dist.runtime import preempt
    # As in a foreground terminal: a shell that started the suite in the background made SIGINT ignored,
    # and the handlers rightly leave an ignored signal alone.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    preempt.install_handlers(only_default=True)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)  # the same press, forwarded (torchrun does this)
    print("stop", preempt.stop_requested(), preempt.stop_reason(), flush=True)
    time.sleep(float(sys.argv[1]))
    os.kill(os.getpid(), signal.SIGINT)  # a second press
    time.sleep(0.5)
    print("still here", flush=True)
""")


@pytest.mark.parametrize("gap,code", [(1.5, 130), (0.0, 0)])
def test_ctrl_c_asks_for_a_save_and_a_second_press_exits_at_once(gap, code):
    p = subprocess.run([sys.executable, "-c", _SIGINT_SCRIPT, str(gap)], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.splitlines()[0] == "stop True SIGINT"
    assert p.returncode == code, p.stderr
    if code:
        assert "still here" not in p.stdout and p.stderr.strip().count("\n") == 0 and "second Ctrl-C" in p.stderr
    else:  # within the same-press window: no exit
        assert "still here" in p.stdout
