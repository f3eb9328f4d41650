# reprohunt: the whole HPO workflow (snakemake -> orion hunt -> retrain -> report) on a GPU host.
#
#   docker build -t reprohunt .
#   docker run --gpus all -v "$PWD/results:/work/results" reprohunt            # default workflow
#   docker run --gpus all -v "$PWD/results:/work/results" reprohunt -n         # any snakemake args
#   docker run --gpus all reprohunt containers/gpu-smoke.sh                    # GPU check
#
# CUDA user-space comes from PyPI's CUDA build of torch and its nvidia-*/cuda-* wheels (hashed in
# containers/requirements/train.lock: CUDA 13.0). The host supplies only the NVIDIA driver, which
# must be R580 or newer (>= 580.65.06; see containers/README.md). For an older driver build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
# which installs torch from that index WITHOUT hash checking (documented in containers/README.md).
#
# Reproducible rebuilds: pass SOURCE_DATE_EPOCH (git commit time), REVISION and CREATED as build
# args and use `buildah bud --timestamp "$SOURCE_DATE_EPOCH"` or BuildKit's rewrite-timestamp=true;
# containers/image-test.sh shows the full command.

# Debian 12 = Python 3.11, the interpreter orion 0.2.7 and the locks were made for.
# Digest of the docker.io/library/debian:bookworm-slim index, as pinned by many public Dockerfiles.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:4724b8cc51e33e398f0e2e15e18d5ec2851ff0c2280647e1310bc1642182655d

# ---------------------------------------------------------------------------------------------------
# os: the Debian packages both the build and the runtime need.
# hadolint ignore=DL3049
FROM ${BASE_IMAGE} AS os
# apt packages are pinned to exact bookworm versions rather than taken from a dated snapshot,
# because snapshot.debian.org is not reachable from this project's build machines while
# deb.debian.org is. A pin fails loudly once Debian supersedes it (bump it from
# `apt-cache policy`) instead of silently changing the image. To rebuild an old commit with the
# very packages it had, pass DEBIAN_SNAPSHOT=<YYYYMMDDTHHMMSSZ> to read from that snapshot.
ARG DEBIAN_SNAPSHOT=
ARG DEBIAN_FRONTEND=noninteractive
ENV LANG=C.UTF-8
RUN if [ -n "$DEBIAN_SNAPSHOT" ]; then \
        printf '%s\n' "Types: deb" \
            "URIs: http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT" \
            "Suites: bookworm bookworm-updates" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "Check-Valid-Until: no" "" \
            "Types: deb" \
            "URIs: http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT" \
            "Suites: bookworm-security" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "Check-Valid-Until: no" \
            >/etc/apt/sources.list.d/debian.sources; \
    fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates=20250419~deb12u2 \
        libsndfile1=1.2.0-1+deb12u1 \
        libyaml-0-2=0.2.5-1 \
        python3.11=3.11.2-6+deb12u9 \
        python3.11-venv=3.11.2-6+deb12u9 \
        tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------
# build: both venvs, made by the same script as `make setup` (containers/setup-env.sh).
# hadolint ignore=DL3049
FROM os AS build
ARG DEBIAN_FRONTEND=noninteractive
# A compiler and headers only for PyYAML 5.4.1 (an sdist): its C extension links libyaml, as in
# the development envs. None of this reaches the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gcc=4:12.2.0-3 \
        libc6-dev=2.36-9+deb12u14 \
        libyaml-dev=0.2.5-1 \
        python3.11-dev=3.11.2-6+deb12u9 \
    && rm -rf /var/lib/apt/lists/*
# With SOURCE_DATE_EPOCH set, Python writes hash-based .pyc files: they are byte-identical across
# builds and stay valid after the builder rewrites every file's mtime to that epoch.
ARG SOURCE_DATE_EPOCH=0
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} PYTHON=/usr/bin/python3.11
# Behind a TLS-intercepting proxy, pass its CA bundle for pip as a build secret (never stored in
# the image): --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
WORKDIR /work
COPY containers/setup-env.sh containers/
COPY containers/requirements/ containers/requirements/
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && containers/setup-env.sh workflow /opt/venv/workflow
# The train env ends with an editable install of this package, so it needs its sources at /work,
# the same path the runtime image has them at.
COPY pyproject.toml ./
COPY src/ src/
# Empty: every wheel from the hashed speechbrain.lock (train.lock, CUDA build of torch, plus
# speechbrain and torchaudio), so the image runs SpeechBrain recipes as well as the default one.
# Set: torch (same version as the lock) from that index, unhashed, over the hashed CPU lock,
# without SpeechBrain (torchaudio loads only next to the CUDA build); recorded in
# /opt/venv/train/.torch-index.
ARG TORCH_INDEX=
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && if [ -z "$TORCH_INDEX" ]; then \
        containers/setup-env.sh speechbrain /opt/venv/train; \
    else \
        torch_version=$(sed -n 's/^torch==\([^ ]*\) .*/\1/p' containers/requirements/train.lock) \
        && TORCH_VARIANT=cpu containers/setup-env.sh train /opt/venv/train \
        && /opt/venv/train/bin/python -m pip install --index-url "$TORCH_INDEX" \
            --extra-index-url https://pypi.org/simple "torch==${torch_version}+${TORCH_INDEX##*/}" \
        && /opt/venv/train/bin/python -m pip check \
        && echo "$TORCH_INDEX (unhashed)" >/opt/venv/train/.torch-index; \
    fi

# ---------------------------------------------------------------------------------------------------
# runtime
FROM os AS runtime
ARG BASE_NAME=docker.io/library/debian:bookworm-slim
ARG BASE_DIGEST=sha256:4724b8cc51e33e398f0e2e15e18d5ec2851ff0c2280647e1310bc1642182655d
ARG SOURCE_URL=unknown
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="reprohunt" \
      org.opencontainers.image.description="Reproducible Orion HPO for SpeechBrain-style speech recipes, driven by Snakemake (CUDA 13.0, NVIDIA driver >= 580)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_NAME}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}"

# A fixed UID/GID 1000 (the usual first desktop user) so a bind-mounted results/ is writable
# without flags; any other UID works with `--user "$(id -u):$(id -g)"` (see entrypoint.sh).
RUN groupadd --gid 1000 reprohunt \
    && useradd --no-log-init --uid 1000 --gid 1000 --create-home \
        --home-dir /home/reprohunt --shell /bin/bash reprohunt

COPY --from=build /opt/venv /opt/venv
WORKDIR /work
COPY . /work/
# Outside /work, so mounting a checkout over /work (to run a working copy) keeps the entrypoint.
COPY containers/entrypoint.sh /usr/local/bin/reprohunt-entrypoint
# /work and results/ are sticky and world-writable (like /tmp) so any --user can create
# .snakemake/, data/ and results/, while the shipped code stays root-owned and read-only.
RUN chmod 1777 /work \
    && install -d -m 1777 /work/results \
    && install -d -o 1000 -g 1000 /home/reprohunt/.cache

# The workflow env's snakemake on PATH; the Snakefile finds the train env through
# REPROHUNT_TRAIN_ENV. orion imports GitPython, and the image has no git (nor a .git): keep it quiet.
ENV PATH=/opt/venv/workflow/bin:$PATH \
    REPROHUNT_TRAIN_ENV=/opt/venv/train \
    REPROHUNT_IMAGE_REVISION=${REVISION} \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GIT_PYTHON_REFRESH=quiet \
    HOME=/home/reprohunt \
    XDG_CACHE_HOME=/home/reprohunt/.cache \
    PYTHONUNBUFFERED=1
VOLUME ["/work/results"]
USER 1000:1000
# tini reaps the orphans of orion's trial processes and forwards signals to snakemake; -s
# (subreaper) keeps that working where it is not PID 1 (buildah run, docker run --init).
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/usr/local/bin/reprohunt-entrypoint"]
CMD ["snakemake", "--cores", "all", "--workflow-profile", "profiles/default"]
