# localcloud image: the offline Lambda + API Gateway emulator. In compose it
# listens on 0.0.0.0:4566 on the stack's default network and runs each
# execution environment as a container of the worker image through the Docker
# socket (LOCALCLOUD_ISOLATION=container). The base's python3 serves the
# health check and the unsafe-process mode (LOCALCLOUD_PYTHON).
ARG BASE_IMAGE=spillway-base:bookworm
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

RUN set -eu; \
    if [ ! -x /usr/bin/python3 ]; then ln -s "$(command -v python3)" /usr/bin/python3; fi; \
    /usr/bin/python3 -c 'import json, zipfile, urllib.request'; \
    groupadd --system --gid 10003 localcloud; \
    useradd --system --uid 10003 --gid 10003 --home-dir /var/lib/localcloud --create-home \
        --shell /usr/sbin/nologin localcloud

COPY bin/localcloud /usr/local/bin/spillway-localcloud

ENV LOCALCLOUD_PYTHON=/usr/bin/python3 \
    PYTHON=/usr/bin/python3 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="spillway-localcloud" \
      spillway.base="${BASE_IMAGE}"

USER 10003:10003
WORKDIR /var/lib/localcloud
EXPOSE 4566
ENTRYPOINT ["/usr/local/bin/spillway-localcloud"]
CMD ["--listen", "0.0.0.0:4566"]
