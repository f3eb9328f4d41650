"""reprohunt: the pipeline around Orion, apart from what a recipe imports (that is ``hpopt``).

Each step is a small command-line module run by one Snakemake rule in the train env: ``hunt``
(with ``preflight`` and ``recovery``), ``best``, ``retrain``, ``provenance``, ``report``, and
``audit`` (run by ``make audit``, never by Snakemake); ``trial`` is the wrapper ``orion hunt``
starts each trial through. The contracts a recipe meets are ``recipe`` (its folder and command
line), ``result`` (the file it writes) and ``dataverify`` (its data record); ``orion_algorithms``
holds corrected Orion algorithms and ``orion_optuna`` Optuna's samplers as an Orion algorithm
(the default hunt's), both loaded through Orion's plugin entry point.
"""
