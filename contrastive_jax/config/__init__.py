"""Configs as data: the defaults every config file starts from and the
dataset table (defaults.py), the linear-evaluation and finetuning configs
(classifier.py), the one validation layer (checks.py), and loading a config
file by name (lib.py)."""
