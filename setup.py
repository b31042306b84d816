"""Maps the top-level folders into one package: podnet.apiserver is apiserver/, and so on."""

from setuptools import find_packages, setup

FOLDERS = {
    "podnet": "podnet",
    "podnet.apiserver": "apiserver",
    "podnet.nodeagent": "nodeagent",
    "podnet.overlay": "overlay",
    "podnet.dns": "dns",
}

packages = []
for package, folder in FOLDERS.items():
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))
setup(package_dir=FOLDERS, packages=packages)
