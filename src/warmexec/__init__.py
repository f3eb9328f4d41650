"""Warm trial launcher: ``hpopt-exec script.py args…`` runs a trial as ``python script.py …`` would.

``python train.py`` spends 8–19 s importing torch, HyperPyYAML (and Orion) before the first line of
the recipe runs; ``orion hunt`` pays that for every trial. ``hpopt-exec`` is a stdlib-only client
(:mod:`warmexec.client`) that asks a warm server (:mod:`warmexec.server`), which has
imported those libraries once, to fork a child that becomes the trial (:mod:`warmexec.trial`):
same argv, cwd, environment, stdin/stdout/stderr, exit status and signals as the cold command, each
trial still its own process. The wire format and the socket rendezvous live in
:mod:`warmexec.protocol`.
"""
