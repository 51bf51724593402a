"""contrastive_jax: contrastive self-supervised learning (SimCLR, MoCo) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="contrastive_jax",
    version="0.1.0",
    description="SimCLR and MoCo pretraining and evaluation in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["contrastive_jax", "contrastive_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.18",   # tf.data / tf.image only
        "tensorflow-datasets>=4.9.8",
        "importlib_resources",    # TFDS downloads need it, without declaring it
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "tensorboard>=2.18",
        "numpy",
        "pillow",
        "safetensors>=0.4",       # export --format=torchvision
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4"],
    },
)
