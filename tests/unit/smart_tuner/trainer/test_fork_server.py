"""Which launches the fork server takes (the processes themselves: tests/integration/smart_tuner/
test_trainer_wrapper.py)."""

from __future__ import annotations

import pytest

from ttsops.config import AdapterConfig
from ttsops.smart_tuner.trainer.fork_server import TRAIN_PRELOAD, fork_target
from ttsops.smart_tuner.trainer.trainer_wrapper import preload_modules

PY = "/usr/bin/python3"


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        ([PY, "-m", "ttsops.train", "-o", "x"], ("module", "ttsops.train")),
        ([PY, "trainer.py", "--lr", "1"], ("path", "trainer.py")),
        ([PY, "-u", "-m", "ttsops.train"], None),  # interpreter options: a fresh interpreter honours them
        ([PY, "-c", "print(1)"], None),
        ([PY, "-m"], None),
        ([PY], None),
        (["/other/python", "-m", "ttsops.train"], None),  # another interpreter than the server's
        (["torchrun", "--nproc_per_node", "2", "train.py"], None),
    ],
)
def test_fork_target_takes_plain_module_and_script_commands_of_our_interpreter(argv, target):
    assert fork_target(argv, PY) == target


def test_preload_defaults_to_train_py_modules_for_the_default_command_only():
    assert preload_modules(AdapterConfig()) == list(TRAIN_PRELOAD)
    foreign = AdapterConfig(command=["{python}", "my_trainer.py"])
    assert preload_modules(foreign) == []  # a foreign trainer is forked only when the config says what to import
    assert preload_modules(AdapterConfig(command=["{python}", "my_trainer.py"], preload=["numpy"])) == ["numpy"]
    assert preload_modules(AdapterConfig(preload=[])) == []  # off: every launch a fresh interpreter
