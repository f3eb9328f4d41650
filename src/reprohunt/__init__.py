"""Workflow steps that talk to Orion or summarise a run (hunt, best, provenance, report, audit).

Each module is a small command-line program run by one Snakemake rule in the train env.
"""
