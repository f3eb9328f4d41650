#!/usr/bin/env bash
# Container entrypoint (under tini): make the environment usable for whatever UID the container
# runs as, refuse a snakemake run that could not write its results (before any work is done),
# then exec the command so it receives signals directly.
#
#   IMAGE                     -> snakemake --cores all --workflow-profile profiles/default (CMD)
#   IMAGE -n --cores 4        -> snakemake -n --cores 4 (bare options are snakemake's)
#   IMAGE containers/gpu-smoke.sh, IMAGE bash, ... -> run as given
set -euo pipefail

if [[ $# -eq 0 || "$1" == -* ]]; then
    set -- snakemake "$@"
fi

# `docker run --user` with a UID other than the image's 1000 cannot write /home/reprohunt:
# give it a private HOME so snakemake, matplotlib and orion can keep their caches.
if [[ ! -w "${HOME:-/nonexistent}" ]]; then
    HOME=$(mktemp -d /tmp/reprohunt-home.XXXXXX)
    export HOME XDG_CACHE_HOME="$HOME/.cache"
fi

if [[ "$(basename "$1")" == snakemake ]]; then
    for dir in "$PWD" "$PWD/results"; do
        if [[ -e "$dir" && ! -w "$dir" ]]; then
            echo "reprohunt: $dir is not writable by uid $(id -u), so the workflow could not save" \
                "its results." >&2
            echo "  fix: run with --user \"\$(id -u):\$(id -g)\" (the owner of the mounted folder)," \
                "or make the host folder writable for uid 1000: sudo chown 1000:1000 <folder>" >&2
            exit 2
        fi
    done
fi

exec "$@"
