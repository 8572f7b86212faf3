"""Every private name of a dependency this package reaches, one module per dependency.

Each module names the release range it was checked against (``CHECKED``, a PEP 440 specifier) and the
release the checks last ran on (``VERIFIED``); ``tests/test_compat.py`` fails when the installed release
leaves the range or when a name moves, saying which function to re-check. Code elsewhere in the package
calls these functions and never spells a private name itself. A module here imports only its dependency
(lazily: ``import avpea_dist.compat.torch`` must not load torch, so ``avpea --help`` stays light).
"""
