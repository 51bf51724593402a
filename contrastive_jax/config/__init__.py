"""Configs as data: the defaults every config file starts from, the
dataset table and each field's one default (defaults.py), the view builders
(views.py), the linear-evaluation and finetuning configs (classifier.py),
the one validation layer (checks.py), and loading a config file by name
with overrides, upgrading a stored one and reading a field or its default
(lib.py)."""
