"""Package discovery: every package under avpea_dist/ (found, never listed), plus the repository's configs/
folder as the data-only package ``avpea_dist.configs`` (mapped in pyproject.toml), which find cannot see."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["avpea_dist", "avpea_dist.*"]) + ["avpea_dist.configs"])
