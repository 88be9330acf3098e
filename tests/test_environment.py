"""The environment's parts on their own: the fingerprint, the target's tags, the requirements
resolved from what is installed here, wheels rebuilt from installed distributions, and the errors
`up` and `sync` give before anything is started. The story on several hosts is in test_sync.py."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from clusterctl import preflight
from clusterctl.environment import (
    Pin,
    SyncError,
    Target,
    best_wheel,
    build_wheelhouse,
    cache_dir,
    resolve_installed,
    wheel_at,
    wheel_from_installed,
)
from clusterctl.errors import InvalidInputError
from clusterctl.inventory import EnvironmentSpec, parse_inventory
from clusterctl.progress import SilentProgress
from tests.helpers.cluster import clusterctl, local_inventory, write_inventory

X86 = Target("cpython", "3.11", "cpython-311-x86_64-linux-gnu", "linux-x86_64", "glibc", "2.36")
ARM = Target("cpython", "3.11", "cpython-311-aarch64-linux-gnu", "linux-aarch64", "glibc", "2.36")


def test_the_fingerprint_is_what_distributed_compares_plus_the_inventorys_packages() -> None:
    from distributed import versions

    assert set(preflight.COMPARED) == {"python", *versions.required_packages, *versions.optional_packages}
    assert preflight.compared(["pyarrow", "numpy"]) == (*preflight.COMPARED, "pyarrow")


def test_python_is_compared_by_major_and_minor_and_packages_exactly() -> None:
    reference = {"python": "3.11.7", "dask": "2026.8.0", "numpy": None}
    assert preflight.differing({"python": "3.11.2", "dask": "2026.8.0"}, reference) == []
    assert preflight.differing({"python": "3.12.1", "dask": "2026.7.0"}, reference) == ["python", "dask"]
    assert preflight.differing({"python": "3.11.7", "dask": "2026.8.0", "numpy": "2.0"}, reference) == ["numpy"]


def test_this_machine_differing_is_a_warning_naming_the_package_and_both_versions() -> None:
    (warning,) = preflight.local_warnings({"python": "3.11.7", "dask": "2026.7.0"},
                                          {"python": "3.11.2", "dask": "2026.8.0"}, "the scheduler host h1")
    assert "dask 2026.7.0" in warning and "h1 has 2026.8.0" in warning


def test_the_local_fingerprint_reads_metadata_here() -> None:
    found = preflight.local_versions(("python", "dask", "no-such-distribution-here"))
    assert found == {"python": found["python"], "dask": metadata.version("dask"), "no-such-distribution-here": None}


def test_a_targets_tags_accept_manylinux_wheels_of_its_glibc_and_older_and_nothing_of_another_arch() -> None:
    from packaging.tags import Tag

    assert X86.key == "cp311-manylinux_2_36_x86_64"
    assert Tag("cp311", "cp311", "manylinux2014_x86_64") in X86.tags
    assert Tag("cp311", "cp311", "manylinux_2_28_x86_64") in X86.tags
    assert Tag("py3", "none", "any") in X86.tags
    assert Tag("cp311", "cp311", "manylinux_2_39_x86_64") not in X86.tags  # needs a newer glibc
    assert Tag("cp311", "cp311", "manylinux2014_x86_64") not in ARM.tags
    assert Tag("cp312", "cp312", "manylinux2014_x86_64") not in X86.tags


def test_the_default_requirements_are_the_versions_installed_here_of_dask_distributed_and_their_needs() -> None:
    pins = {pin.name.lower(): pin.version for pin in resolve_installed(["dask", "distributed"], X86)}
    for name in ("dask", "distributed", "msgpack", "cloudpickle", "toolz", "tornado", "pyyaml"):
        assert pins[name] == metadata.version(name), name
    assert "numpy" not in pins and "pytest" not in pins  # only what they need


def test_a_requirement_not_installed_here_does_not_resolve_and_is_named() -> None:
    with pytest.raises(SyncError) as caught:
        resolve_installed(["dask", "no-such-distribution-xyz"], X86)
    assert "no-such-distribution-xyz" in caught.value.message and "does not resolve" in caught.value.message


def _fake_distribution(site: Path, content: bytes = b"VALUE = 1\n") -> metadata.Distribution:
    """A small installed distribution, as pip leaves one: files, METADATA, WHEEL, RECORD."""
    import base64
    import csv

    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_bytes(content)
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    (info / "INSTALLER").write_text("pip\n")
    with (info / "RECORD").open("w", newline="") as handle:
        writer = csv.writer(handle)
        for path in ("fakepkg/__init__.py", "fakepkg-1.0.dist-info/METADATA", "fakepkg-1.0.dist-info/WHEEL",
                     "fakepkg-1.0.dist-info/INSTALLER"):
            data = (site / path).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([path, f"sha256={digest}", len(data)])
        writer.writerow(["../../bin/fakepkg", "sha256=x", "1"])  # a console script: left out
        writer.writerow(["fakepkg-1.0.dist-info/RECORD", "", ""])
    return metadata.Distribution.at(info)


def test_a_wheel_rebuilt_from_an_installed_distribution_is_reproducible_and_installable(tmp_path: Path) -> None:
    import zipfile

    distribution = _fake_distribution(tmp_path / "site")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = wheel_from_installed(distribution, X86, tmp_path / "a")
    second = wheel_from_installed(distribution, X86, tmp_path / "b")
    assert first is not None and second is not None
    assert first.name == "fakepkg-1.0-py3-none-any.whl"
    assert wheel_at(first).sha256 == wheel_at(second).sha256, "the same bytes each time: shipped once"
    names = zipfile.ZipFile(first).namelist()
    assert "fakepkg/__init__.py" in names and "fakepkg-1.0.dist-info/RECORD" in names
    assert "fakepkg-1.0.dist-info/INSTALLER" not in names and not any(n.startswith("..") for n in names)
    assert best_wheel([tmp_path / "a"], Pin("fakepkg", "1.0"), X86) == first


def test_an_installed_distribution_whose_files_changed_is_not_rebuilt(tmp_path: Path) -> None:
    distribution = _fake_distribution(tmp_path / "site")
    (tmp_path / "site" / "fakepkg" / "__init__.py").write_text("VALUE = 2  # edited after installation\n")
    assert wheel_from_installed(distribution, X86, tmp_path) is None


def test_no_wheel_for_a_hosts_platform_names_the_package_and_the_platform(tmp_path: Path) -> None:
    """With a `wheelhouse:` no index is asked: msgpack installed here is built for x86_64, not aarch64."""
    (tmp_path / "wheels").mkdir()
    spec = EnvironmentSpec(sync=True, wheelhouse="wheels")
    with pytest.raises(SyncError) as caught:
        build_wheelhouse(spec, tmp_path, ARM, ["h2"], SilentProgress())
    message = caught.value.message
    assert "msgpack " + metadata.version("msgpack") in message
    assert "manylinux_2_36_aarch64" in message and "h2" in message
    assert "dask " not in message, "pure-python wheels fit every platform"


def test_a_wheelhouse_that_is_not_a_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        build_wheelhouse(EnvironmentSpec(wheelhouse="missing"), tmp_path, X86, ["h1"], SilentProgress())


@pytest.mark.parametrize("package", ["numpy>=2", "python", "-e .", ""])
def test_environment_packages_are_distribution_names(package: str) -> None:
    inventory = local_inventory()
    inventory["environment"] = {"packages": [package]}
    with pytest.raises(InvalidInputError) as caught:
        parse_inventory(yaml.safe_dump(inventory), "c.yaml")
    assert "environment.packages" in caught.value.message


def test_up_refuses_a_requirement_that_does_not_resolve_and_starts_nothing(tmp_path: Path,
                                                                           clusterctl_home: Path) -> None:
    inventory = local_inventory()
    inventory["hosts"]["me"]["run_dir"] = str(tmp_path / "run")
    inventory["environment"] = {"sync": True, "packages": ["no-such-distribution-xyz"]}
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)))
    assert result.exit_code == 1, result.stderr
    assert "requirement no-such-distribution-xyz does not resolve" in result.stderr
    assert not list(clusterctl_home.glob("clusters/*/state.json")), "nothing was started"
    assert not (tmp_path / "run" / "venv").exists()


def _wheelhouse_of(directory: Path, *names: str) -> Path:
    """A `wheelhouse:` directory holding the wheels of dask, distributed and their needs, ``names``
    and pip, as installed here."""
    directory.mkdir()
    needs = [pin.name for pin in resolve_installed(["dask", "distributed"], X86)]
    for name in (*needs, *names, "pip"):
        assert wheel_from_installed(metadata.distribution(name), X86, directory) is not None, name
    return directory


def test_a_requirements_file_is_resolved_by_pip_from_the_wheelhouse_alone(tmp_path: Path) -> None:
    """dask and distributed need a dozen distributions: pip resolves them all offline, from the wheelhouse."""
    _wheelhouse_of(tmp_path / "wheels", "mdurl")
    (tmp_path / "requirements.txt").write_text(f"mdurl=={metadata.version('mdurl')}\n")
    spec = EnvironmentSpec(sync=True, requirements="requirements.txt", wheelhouse="wheels")
    house = build_wheelhouse(spec, tmp_path, X86, ["h1"], SilentProgress())
    assert f"mdurl=={metadata.version('mdurl')}" in house.requirements
    assert f"distributed=={metadata.version('distributed')}" in house.requirements, "always: dask and distributed"
    assert house.installer.startswith("pip-") and house.installer in house.wheels


def test_a_requirement_pip_cannot_resolve_is_named(tmp_path: Path) -> None:
    _wheelhouse_of(tmp_path / "wheels", "mdurl")
    (tmp_path / "requirements.txt").write_text("mdurl==0.0.1\n")
    spec = EnvironmentSpec(sync=True, requirements="requirements.txt", wheelhouse="wheels")
    with pytest.raises(SyncError) as caught:
        build_wheelhouse(spec, tmp_path, X86, ["h1"], SilentProgress())
    assert "do not resolve" in caught.value.message and "mdurl==0.0.1" in caught.value.message


def test_a_cached_wheels_hash_is_remembered_until_the_file_changes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCTL_WHEEL_CACHE", str(tmp_path / "cache"))
    path = wheel_from_installed(_fake_distribution(tmp_path / "site"), X86, cache_dir())
    assert path is not None
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    assert wheel_at(path).sha256 == real
    remembered = path.with_name(path.name + ".sha256")
    stamp = remembered.read_text().rsplit(" ", 1)[0]
    remembered.write_text(f"{stamp} {'0' * 64}\n")
    assert wheel_at(path).sha256 == "0" * 64, "a no-op sync does not read the wheel again"
    path.write_bytes(path.read_bytes() + b"\0")  # another size: computed again
    assert wheel_at(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
