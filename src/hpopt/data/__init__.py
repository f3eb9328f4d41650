"""Data preparation for the speaker-id recipe: corpora, manifests, cached features, hashes.

Entry points are the command-line modules ``python -m hpopt.data.prepare`` and
``python -m hpopt.data.verify``. This package file stays import-free on purpose: ``import hpopt``
must not pull in numpy or torch, and the submodules import them only where they are needed.
"""
