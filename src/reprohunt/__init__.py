"""reprohunt: the pipeline around Orion, apart from what a recipe imports (that is ``hpopt``).

Each step is a small command-line module run by one Snakemake rule in the train env, through
``logged``; ``audit`` is run by ``make audit``, never by Snakemake. The modules, one job each:

Steps of the workflow
- ``hunt``: check, recover, run ``orion hunt`` and judge it by Orion's records (hunt.json);
- ``best``: ``orion info`` verbatim, the best trial (best.json/.yaml) and every trial;
- ``retrain``: one full-budget run of the final stage, checked against the result contract;
- ``compare``: tuned against untuned over the final seeds, and the verdict (comparison.json);
- ``provenance``: how a result was made (provenance.json);
- ``report``: the self-contained report.html and its plots;
- ``published``: whether a run reproduced the result kept in ``published/``;
- ``audit``: re-check a finished results folder against its provenance record.

What the steps share
- ``records``: the typed records the steps read (hunt spec, hunt summary, best trial, trials,
  comparison, provenance);
- ``recipe``: the recipe contract, its folder and its command line;
- ``result``: the result contract, the file a recipe writes at the end of a run;
- ``dataverify``: re-hash a prepared data folder against its hashes.json;
- ``preflight``: the checks that run before a hunt touches the database or starts a trial;
- ``recovery``: release what dead hunt processes left behind, once proven dead;
- ``dbguard``: refuse a damaged PickledDB before a hunt, snapshot a good one after;
- ``first_trial``: the recipe as shipped as the hunt's first trial;
- ``hunt_progress``: live progress lines of a running hunt;
- ``final_progress``: progress lines of the final stage;
- ``trial``: ``hpopt-trial``, the wrapper ``orion hunt`` starts each trial through;
- ``logged``: a rule's command, logged, under the numerics profile, a full disk named;
- ``runlock``: one live run per results folder;
- ``scheduler``: which scheduler ran each rule (provenance's ``scheduler`` section);
- ``numerics``: the numerics profile, which CPU code paths the libraries may take;
- ``numerics_check``: whether a recipe computes the same bits on Intel and AMD CPUs;
- ``optrace``: scripts run one after another with every tensor op hashed;
- ``config_errors``: config errors with the file, the key and the fix;
- ``config_docs``: config/README.md, made from the config schema;
- ``dashboard``: Orion's dashboard over one finished result.

Orion, adapted
- ``orion_storage``: the workflow's ``orion.storage`` config as Orion needs it;
- ``orion_algorithms``: Hyperband and ASHA with a different seed per repetition;
- ``orion_optuna``: Optuna's samplers as an Orion algorithm (the default hunt's);
- ``orion_noise``: Orion's warnings that concern no user, filtered where they arise.
The two algorithm modules are loaded through Orion's plugin entry point (pyproject.toml).
"""
