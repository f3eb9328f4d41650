"""Data preparation for the speaker-id recipe: corpora, manifests, cached features, hashes.

Entry points are the command-line modules ``python recipes/speaker_id/speaker_id_prepare.py`` and
``python -m reprohunt.dataverify``. This package file stays import-free on purpose: ``import hpopt``
must not pull in numpy or torch, and the submodules import them only where they are needed.
"""
