"""Package layout: train/, export/ and apps/ sit at the top of the repository (one folder per
side of the project) but install as edgeasr.train, edgeasr.export and edgeasr.apps.

pyproject.toml holds all metadata; this file only computes the package mapping, which
setuptools cannot express declaratively for nested packages found in remapped folders.
"""

from setuptools import find_packages, setup

ROOTS = {
    "edgeasr": "edgeasr",
    "edgeasr.train": "train",
    "edgeasr.export": "export",
    "edgeasr.apps": "apps",
}

packages: list[str] = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS, include_package_data=True)
