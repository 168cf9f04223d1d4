from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
readme = HERE / "README.md"

setup(
    name="graphattn",
    version="0.1.0",
    description="Graph-attention models for recommendation, vision and sequences on one set of attention primitives",
    long_description=readme.read_text(encoding="utf-8") if readme.is_file() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["graphattn*", "recsys*", "vision*", "sequence*"]),
    # YAML defaults (overall.yaml, model/*.yaml, dataset/*.yaml) ship with the code.
    package_data={"": ["*.yaml", "**/*.yaml", "static/*.html"]},
    include_package_data=True,
    py_modules=["run"],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3,<3",
        "torch-geometric>=2.5,<3",
        "scipy>=1.11,<2",
        "faiss-cpu>=1.8,<2",
        "numpy>=1.26,<3",
        "pandas>=2.1,<4",
        "pyyaml>=6,<7",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "scikit-learn>=1.3,<2",
        "fast-tsp>=0.2.2,<0.3",  # TSP labels for n > 12 (sequence/data/tsp.py); MIT licence
        "fastapi>=0.110,<1",  # CHM-Corr++ web page (vision/chm_corr/app.py)
        "uvicorn>=0.29,<1",  # serves it: python -m vision.chm_corr.serve
        "httptools>=0.6,<1",  # uvicorn's C HTTP parser: run.py serve (recsys/serve.py) at ~1.5x h11's rate
        "tensorboard>=2.14,<3",  # log_tensorboard: true (graphattn/training/trainer.py, torch.utils.tensorboard)
        "optuna>=3.6,<5",  # hyperparameter search: run.py --search (graphattn/search.py); tested with 4.9
    ],
    # recbole (only for its bundled ml-100k atomic files, the offline default dataset) is installed by the
    # Makefile with --no-deps:
    # its own pins do not install beside numpy 2.
    extras_require={
        "test": ["pytest>=8,<10", "hypothesis>=6.100,<7",
                 "httpx>=0.27,<1", "selenium>=4.20,<5"],  # FastAPI TestClient; headless-Chromium page test
        # `make mutate` (docs/testing.md); not needed by `make test` or CI.
        "mutate": ["mutmut>=3.8,<4"],
    },
)
