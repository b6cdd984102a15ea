# syntax=docker/dockerfile:1
#
# One image for every process: the entrypoint is `v1-sync-helper` and the
# first argument picks the role (`bridge`, `worker`, `flower`, `status`, ...).
#
#   docker build -t lfx-v1-sync-helper .                    # runtime image (last stage)
#   docker build --target sandbox -t lfx-v1-sync-helper:sandbox .   # dev-only fakes
#
# Stages: `build` installs the runtime dependencies into /opt/venv from wheels
# only; `build-dev` adds the dev extra for the sandbox; `base` is the slim
# Python with the unprivileged user; `sandbox` and `runtime` copy a venv onto
# it. The runtime stage comes last so a plain `docker build` produces it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY sync_core ./sync_core
COPY operations ./operations
COPY v1_sync_helper ./v1_sync_helper
COPY bridge ./bridge
COPY tasks ./tasks
COPY sandbox ./sandbox
# The project becomes one wheel; the venv gets no pip of its own (pip --python
# installs into it from outside). --only-binary: every dependency ships wheels,
# so a dependency that would need a compiler fails the build instead.
# -c constraints.txt: the versions the tests ran with (`make lock`).
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --only-binary=:all: -c constraints.txt \
        /wheels/*.whl

# ---------------------------------------------------------------------------
FROM build AS build-dev
# The sandbox (dev only) needs the dev extra: never copied into `runtime`.
RUN pip --python /opt/venv/bin/python install --only-binary=:all: -c constraints.txt \
        "$(echo /wheels/lfx_v1_sync_helper-*.whl)[dev]"

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ARG APP_UID=10001
# HOME=/tmp: with a read-only root filesystem, /tmp is the only writable place
# (an emptyDir or tmpfs), so any library cache lands there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid "${APP_UID}" app \
 && useradd --system --uid "${APP_UID}" --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
WORKDIR /tmp

# ---------------------------------------------------------------------------
FROM base AS sandbox
COPY --from=build-dev /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python", "-m", "sandbox"]

# ---------------------------------------------------------------------------
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# bridge /livez /readyz /metrics; worker /metrics; Flower UI.
EXPOSE 8080 9100 5555
ENTRYPOINT ["v1-sync-helper"]
CMD ["--help"]
