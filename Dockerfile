# syntax=docker/dockerfile:1
# One image for every process of the outbox: `outbox migrate`, `outbox gateway`, `outbox relay`
# and `outbox worker --handlers MODULE` (the command is the container's arguments).
#
#   docker build -t outbox:0.1.0 .
#   docker run --rm outbox:0.1.0 --help
#
# Your own handlers: build FROM this image, COPY your package into /app (the working directory is
# importable, as with `outbox worker` anywhere) and run `worker --handlers yourpackage.jobs`.
# The image carries the reservations example's handlers (`examples.reservations.handlers`),
# which docker-compose.yml and deploy/k8s run. No HEALTHCHECK here: each service has probes of
# its own (gateway: OUTBOX_GATEWAY_PORT, relay and worker: OUTBOX_PROBE_PORT), which
# docker-compose.yml and the Kubernetes manifests check.

ARG PYTHON_VERSION=3.11

# --- builder: a wheel of the project, installed with its runtime dependencies into a venv -------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/outbox

WORKDIR /src
COPY pyproject.toml README.md ./
COPY outbox ./outbox
COPY gateway ./gateway
COPY relay ./relay
COPY worker ./worker
COPY migrations ./migrations

# The project itself, no extras: the dev tools and embedded servers stay out of the image.
# psycopg[binary] and confluent-kafka come as manylinux wheels, so no compiler is needed.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/outbox/bin/pip install /wheels/*.whl

# --- runtime: the venv on a slim Python, as an unprivileged user ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

# A fixed, numeric UID/GID: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# manifests' securityContext (runAsUser: 10001) matches it.
ARG OUTBOX_UID=10001
RUN groupadd --system --gid "${OUTBOX_UID}" outbox \
    && useradd --system --uid "${OUTBOX_UID}" --gid outbox --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin outbox

# Same base image and path as the builder, so the venv's interpreter links stay valid. The files
# stay owned by root and read-only to the service: the root filesystem can be mounted read-only.
COPY --from=builder /opt/outbox /opt/outbox
WORKDIR /app
COPY examples ./examples

ENV PATH=/opt/outbox/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OUTBOX_LOG_FORMAT=json

USER 10001:10001

# 8080: the HTTP gateway (OUTBOX_GATEWAY_PORT); 9100: relay and worker probes (OUTBOX_PROBE_PORT).
EXPOSE 8080 9100

ENTRYPOINT ["outbox"]
CMD ["--help"]
