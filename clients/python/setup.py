"""Builds the gRPC stubs (``tokenvault.v1``) from the repository's ``proto/`` with grpcio-tools
(a build requirement) whenever the package is built or installed, before setuptools looks at its
packages: they are generated, never committed, so they always match the contract the vault
serves."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# The repository's contract; an sdist carries its own copy beside this file.
PROTO_DIRS = [HERE.parent.parent / "proto", HERE / "proto"]
OUT = HERE / "src"


def generate_stubs() -> None:
    from grpc_tools import protoc

    root = next((d for d in PROTO_DIRS if (d / "tokenvault/v1/vault.proto").is_file()), None)
    target = OUT / "tokenvault/v1"
    if root is None:
        if (target / "vault_pb2.py").is_file():
            return  # built before, from an unpacked sdist
        raise SystemExit(f"proto/tokenvault/v1/vault.proto not found in {PROTO_DIRS}")
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text('"""Generated from proto/tokenvault/v1 (not committed)."""\n')
    # protoc's include path for its well-known types (none used today; kept for later imports).
    import grpc_tools
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["grpc_tools.protoc", f"-I{root}", f"-I{well_known}",
                      f"--python_out={OUT}", f"--pyi_out={OUT}", f"--grpc_python_out={OUT}",
                      str(root / "tokenvault/v1/vault.proto")])
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({rc}) on {root}")


generate_stubs()
setup(packages=["tokenvault", "tokenvault.v1"], package_dir={"": "src"})
