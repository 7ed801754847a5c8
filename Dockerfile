# Image of the reply-tracker operator:
#
#   docker build -t reply-tracker:dev .
#
# The builder stage installs the locked dependencies and the package into a
# virtual environment. The final stage copies only that environment onto the
# same base, so no build tools or source files are shipped.
# tests/e2e/test_image_install.py replays the builder stage's COPY and RUN
# instructions in a temporary folder, so keep them to plain commands.

# NOTE: pinned by tag only. The machines this project is developed on have no
# Docker engine and no access to the image registry, so the digest could not
# be looked up. Append "@sha256:<digest>" after checking it with
# `docker buildx imagetools inspect python:3.11.17-slim-bookworm`.
# The Python minor version must match the one requirements.lock was compiled
# with (see its header), because the lock is resolved for that version.
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"

RUN python -m venv "${VIRTUAL_ENV}"

WORKDIR /src

# Dependencies first, so that a change in the source does not reinstall them.
# --only-binary: the slim base has no compiler, so every package must come as
# a wheel, and the hashes in the lock pin each file.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock

COPY pyproject.toml ./
COPY operator ./operator
# The operator needs neither pip nor setuptools at run time, so both leave the
# environment once the package is in.
# NOTE: pip fetches this step's build backend (setuptools and wheel, as
# pyproject.toml's build-system requires) without pins or hashes. The
# dependencies installed into the environment all come from the hashed lock.
RUN pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes setuptools pip

FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"

COPY --from=builder /opt/venv /opt/venv

# 65532 is the "nonroot" user of distroless images. The base image has no
# /etc/passwd entry for it, and none is added.
USER 65532:65532

# 8080: kopf's liveness endpoint (--liveness); 9090: Prometheus metrics.
EXPOSE 8080 9090

ENTRYPOINT ["replytracker"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
