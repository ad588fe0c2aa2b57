# Worker image: the spillway-worker XML-RPC server in front of warm Python
# runners. Built by `make images` with the binary built on the host (static,
# CGO off) and BASE_IMAGE chosen by scripts/choose-base.sh: python:3.12-slim
# when it can be had, else the offline spillway-base:bookworm.
#
# lb runs it hardened (read-only root, tmpfs /tmp, cap-drop ALL,
# no-new-privileges, limits, internal network) and copies the function to
# /var/task/function.py before start. /var/task and the function are owned by
# root and read-only (0555/0444) to the function, which runs as uid 10001.
# No secrets are baked in or passed.
ARG BASE_IMAGE=spillway-base:bookworm
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

# The worker runs ${PYTHON} (default /usr/bin/python3). Debian has it there;
# python:3.12-slim has /usr/local/bin/python3 only, so link it in place: the
# same absolute path then works on either base.
RUN set -eu; \
    if [ ! -x /usr/bin/python3 ]; then ln -s "$(command -v python3)" /usr/bin/python3; fi; \
    /usr/bin/python3 -c 'import json, zipfile, urllib.request, ast'; \
    groupadd --system --gid 10001 spillway; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/task --no-create-home \
        --shell /usr/sbin/nologin spillway; \
    mkdir -p /var/task; chown 0:0 /var/task; chmod 0555 /var/task

COPY bin/worker /usr/local/bin/spillway-worker

ENV PYTHON=/usr/bin/python3 \
    SERVER_PORT=8001 \
    FUNCTION_PATH=/var/task/function.py \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="spillway-worker" \
      spillway.base="${BASE_IMAGE}"

USER 10001:10001
WORKDIR /var/task
VOLUME ["/var/task"]
EXPOSE 8001
ENTRYPOINT ["/usr/local/bin/spillway-worker"]
