"""Every developer and CI entry point of the detcore monorepo.

nox -s tests        install every package from this tree (pinned torch pair) and run all tests
nox -s demo         train the demo Mask R-CNN on the synthetic shapes data (CPU), evaluate, draw: outputs/demo/
nox -s lint         ruff check + ruff format --check
nox -s build        build every wheel and sdist into dist/, then install each wheel alone and import it
nox -s bench        run benchmarks/ and write BENCHMARKS.md
nox -s build_cuda   compile detcore-ops-cuda with nvcc (fails only for lack of nvcc)
nox -s tests_cuda   run the CUDA tests (needs a GPU and nvcc)
nox -s compat       run the op tests against one built detcore-ops wheel under two torch versions
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "constraints.txt")
# Dependency order (ARCHITECTURE.md): each package depends only on those before it.
PACKAGES = [
    "detcore-ops",
    "detcore-structures",
    "detcore-backbones",
    "detcore-heads",
    "detcore-archs",
    "detcore-engine",
]
CUDA_PACKAGE = "detcore-ops-cuda"
EXAMPLE_PLUGIN = "examples/detcore-plugin-example"
TEST_DEPS = ["pytest>=8", "hypothesis>=6", "hatchling>=1.21", "build>=1.0"]

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = False


def _install_tree(session: nox.Session, *extra: str) -> None:
    """torch/torchvision from the pinned pair, then every package from this tree (normal build isolation)."""
    session.install("-c", CONSTRAINTS, "torch", "torchvision", *TEST_DEPS, *extra)
    session.install("-c", CONSTRAINTS, *[f"./packages/{p}" for p in PACKAGES])


@nox.session
def tests(session: nox.Session) -> None:
    """All packages' tests and the example plugin's, on CPU (CUDA tests skip without a GPU)."""
    _install_tree(session)
    session.run("detcore", "plugins")
    args = session.posargs or ["-q", "-p", "no:cacheprovider"]
    session.run("python", "-m", "pytest", *args, env={"OMP_NUM_THREADS": "2"})


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: ``python -m detcore.engine.demo`` into a fresh outputs/demo (dataset kept in outputs/shapes)."""
    _install_tree(session)
    shutil.rmtree(ROOT / "outputs" / "demo", ignore_errors=True)
    session.run(
        "python",
        "-m",
        "detcore.engine.demo",
        "--output-dir",
        str(ROOT / "outputs" / "demo"),
        "--data-root",
        str(ROOT / "outputs" / "shapes"),
        *session.posargs,
        env={"OMP_NUM_THREADS": "2"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _has_nvcc() -> bool:
    return shutil.which(os.environ.get("CUDACXX", "nvcc")) is not None


@nox.session
def build(session: nox.Session) -> None:
    """Wheels and sdists of every package into dist/; each wheel then installs alone in a fresh venv."""
    session.install("build>=1.0")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    packages = list(PACKAGES)
    if _has_nvcc():
        packages.append(CUDA_PACKAGE)
    else:
        session.warn(f"nvcc not found: {CUDA_PACKAGE} is not built (see `nox -s build_cuda`)")
    for pkg in packages:
        session.run("python", "-m", "build", "--outdir", str(dist), f"packages/{pkg}")
    for pkg in packages:
        module = "detcore." + pkg.removeprefix("detcore-").replace("-", "_")
        wheel = glob.glob(str(dist / f"{pkg.replace('-', '_')}-*.whl"))
        if len(wheel) != 1:
            session.error(f"expected one wheel for {pkg} in dist/, found {wheel}")
        with tempfile.TemporaryDirectory(prefix=f"wheel-{pkg}-") as tmp:
            python = Path(tmp) / "bin" / "python"
            session.run(sys.executable, "-m", "venv", tmp, external=True)
            session.run(
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                CONSTRAINTS,
                "--find-links",
                str(dist),
                wheel[0],
                external=True,
            )
            session.run(
                str(python), "-c", f"import {module}; print({module}.__name__, 'imports')", external=True
            )
            if pkg == "detcore-ops":
                session.run(str(Path(tmp) / "bin" / "detcore"), "plugins", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run benchmarks/bench_*.py (2 threads) and write BENCHMARKS.md."""
    _install_tree(session)
    session.run("python", "benchmarks/run.py", "--output", "BENCHMARKS.md", *session.posargs)


@nox.session
def build_cuda(session: nox.Session) -> None:
    """Compile every CUDA kernel of detcore-ops-cuda (needs nvcc, not a GPU)."""
    if not _has_nvcc():
        session.error(
            "nvcc not found: put the CUDA compiler on PATH or set CUDACXX to build detcore-ops-cuda"
        )
    session.install("build>=1.0")
    session.run(
        "python", "-m", "build", "--wheel", "--outdir", str(ROOT / "dist"), f"packages/{CUDA_PACKAGE}"
    )


@nox.session
def tests_cuda(session: nox.Session) -> None:
    """CUDA kernels against the CPU kernels (needs a GPU)."""
    _install_tree(session)
    session.install("-c", CONSTRAINTS, f"./packages/{CUDA_PACKAGE}")
    session.run("python", "-m", "pytest", "-q", "-m", "cuda", *session.posargs)


@nox.session
@nox.parametrize("torch_version", ["2.13.0", "2.14.1"])
def compat(session: nox.Session, torch_version: str) -> None:
    """One detcore-ops wheel, built once, tested unchanged under two torch versions."""
    wheel_dir = ROOT / "build" / "compat-wheel"
    wheels = glob.glob(str(wheel_dir / "detcore_ops-*.whl"))
    if not wheels:
        session.install("build>=1.0")
        session.run("python", "-m", "build", "--wheel", "--outdir", str(wheel_dir), "packages/detcore-ops")
        wheels = glob.glob(str(wheel_dir / "detcore_ops-*.whl"))
    session.install(
        f"torch=={torch_version}", "pluggy>=1.3", "numpy", "pytest>=8", "hypothesis>=6", "hatchling>=1.21"
    )
    env = {"OMP_NUM_THREADS": "2"}
    if torch_version == "2.14.1":
        session.install("-c", CONSTRAINTS, "torchvision")
    else:  # no CPU torchvision exists for this torch: tests that compare with torchvision skip (tests/conftest.py)
        env["DETCORE_COMPAT_NO_TORCHVISION"] = "1"
    session.install("--no-deps", wheels[0])
    session.run(
        "python", "-c", "import torch, detcore.ops; print('torch', torch.__version__, 'detcore.ops ok')"
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "packages/detcore-ops/tests",
        *session.posargs,
    )
