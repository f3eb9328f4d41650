#!/usr/bin/env bash
# `make image-test`: build the real Dockerfile without a Docker engine and run the workflow in it.
#
# 1. A Debian 12 base made locally with debootstrap and tagged localhost/reprohunt-base:bookworm
#    (registries' base images cannot be pulled here); the Dockerfile is built unchanged, the base
#    swapped only through --build-arg BASE_IMAGE.
# 2. `buildah bud --isolation chroot` (vfs storage, no daemon, needs root), --timestamp from the
#    commit time so a rebuild of the same commit gives the same image where the builder allows.
# 3. Inside the image (as its non-root user, on the CPU): the train env imports torch, orion and
#    hyperpyyaml with PyYAML 5.4.1, `snakemake --version`, then the image's own ENTRYPOINT + CMD
#    (the default workflow) with results/ mounted, and results/<exp>/report.html and
#    results/<exp>/final/metrics.json must exist.
# Prints the build time and the image size. Downloads several GB of CUDA wheels on a cold cache.
#
# Environment:
#   IMAGE_TEST_STATE=/var/tmp/reprohunt-image-test  buildah storage, pip cache, results (large)
#   IMAGE_TEST_KEEP=1    keep the built image afterwards (default: removed, vfs copies are large)
#   IMAGE_TEST_REUSE=1   skip the build when the image is already in the store (needs KEEP before)
#   IMAGE_TEST_CA_BUNDLE=FILE  CA bundle the build's pip must trust (default: the host's bundle
#                        when the host trusts local CAs, e.g. behind an intercepting proxy); it is
#                        passed as the build secret pip-ca and never stored in the image.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${IMAGE_TEST_STATE:-/var/tmp/reprohunt-image-test}
image=localhost/reprohunt:image-test
base=localhost/reprohunt-base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() {
    echo "image-test: error: $*" >&2
    exit 1
}
step() { echo "== image-test: $*"; }

[[ $(id -u) == 0 ]] || die "buildah's chroot isolation with vfs storage needs root here; run as root"
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "install buildah and debootstrap (Debian 12 packages)"
    step "installing buildah and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null
fi

export BUILDAH_ISOLATION=chroot
bah() { buildah --root "$state/storage" --runroot "$state/run" --storage-driver vfs "$@"; }
mkdir -p "$state"

ctr=""
cleanup() {
    [[ -z "$ctr" ]] || bah rm "$ctr" >/dev/null 2>&1 || true
    if [[ "${IMAGE_TEST_KEEP:-0}" != 1 ]]; then bah rmi "$image" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# --- 1. local Debian 12 base, laid out like the official debian:bookworm-slim -----------------
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
    step "debootstrap bookworm -> $base"
    rootfs="$state/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $state/debootstrap.log"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    bctr=$(bah from scratch)
    mnt=$(bah mount "$bctr")
    cp -a "$rootfs/." "$mnt/"
    bah umount "$bctr" >/dev/null
    bah config --cmd /bin/bash "$bctr"
    bah commit --quiet --timestamp 0 "$bctr" "$base" >/dev/null
    bah rm "$bctr" >/dev/null
    rm -rf "$rootfs"
fi
base_digest=$(bah inspect --type image --format '{{.FromImageDigest}}' "$base")

# --- 2. build ---------------------------------------------------------------------------------
cd "$repo"
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ -z "$(git status --porcelain 2>/dev/null)" ]] || revision="$revision-dirty"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
source_url=$(git remote get-url origin 2>/dev/null || echo unknown)

secrets=()
ca_bundle=${IMAGE_TEST_CA_BUNDLE:-}
if [[ -z "$ca_bundle" ]] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    ca_bundle=/etc/ssl/certs/ca-certificates.crt
fi
[[ -z "$ca_bundle" ]] || secrets=(--secret "id=pip-ca,src=$ca_bundle")

if [[ "${IMAGE_TEST_REUSE:-0}" == 1 ]] && bah inspect --type image "$image" >/dev/null 2>&1; then
    step "reusing $image (IMAGE_TEST_REUSE=1)"
else
    step "buildah bud (revision $revision, SOURCE_DATE_EPOCH=$epoch)"
    start=$(date +%s)
    bah bud --isolation chroot --pull=never --timestamp "$epoch" "${secrets[@]}" \
        --build-arg BASE_IMAGE="$base" \
        --build-arg BASE_NAME="$base" \
        --build-arg BASE_DIGEST="$base_digest" \
        --build-arg SOURCE_DATE_EPOCH="$epoch" \
        --build-arg CREATED="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" \
        --build-arg REVISION="$revision" \
        --build-arg VERSION="$version" \
        --build-arg SOURCE_URL="$source_url" \
        -t "$image" -f Dockerfile .
    echo "image-test: build time $(($(date +%s) - start)) s"
fi
echo "image-test: image $image, id $(bah images --format '{{.ID}}' "$image")," \
    "size $(bah images --format '{{.Size}}' "$image")"

# --- 3. inside the image ------------------------------------------------------------------------
ctr=$(bah from --pull=never "$image")
in_image() { bah run --isolation chroot "$@"; }

step "non-root user, train env, workflow env"
uid=$(in_image "$ctr" -- id -u)
[[ "$uid" != 0 ]] || die "the image runs as root"
in_image "$ctr" -- /opt/venv/train/bin/python -c '
from importlib.metadata import version
import hpopt, hyperpyyaml, orion.core, soundfile, torch, yaml
assert yaml.__version__ == "5.4.1", yaml.__version__
assert yaml.__with_libyaml__, "PyYAML built without its libyaml C extension"
print("train env:", {p: version(p) for p in ("torch", "orion", "hyperpyyaml", "pyyaml")},
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")'
in_image "$ctr" -- snakemake --version

[[ -f Snakefile && -d workflow/rules ]] ||
    die "no Snakefile + workflow/rules/ in this checkout: the default workflow cannot be run"
exp=$(sed -n 's/^experiment:[[:space:]]*\([^[:space:]#]*\).*/\1/p' config/config.yaml)
[[ -n "$exp" ]] || die "config/config.yaml has no top-level 'experiment:'"
results="$state/results"
rm -rf "$results"
install -d -o "$uid" "$results"
mapfile -t default_cmd < <(bah inspect --type image "$image" | python3 -c '
import json, sys
config = json.load(sys.stdin)["OCIv1"]["config"]
print(*config["Entrypoint"] + config["Cmd"], sep="\n")')
step "default workflow on the CPU: ${default_cmd[*]}"
start=$(date +%s)
in_image -v "$results:/work/results" "$ctr" -- "${default_cmd[@]}"
echo "image-test: workflow time $(($(date +%s) - start)) s"
for f in "$exp/report.html" "$exp/final/metrics.json"; do
    [[ -s "$results/$f" ]] || die "the workflow did not produce results/$f"
    echo "image-test: results/$f ($(stat -c %s "$results/$f") bytes)"
done
step "passed"
