# lb image: the Spillway daemon. It drives the Docker Engine API through
# /var/run/docker.sock, mounted by compose (the only service that gets it).
#
# It runs as uid 10002, not root: compose adds the socket's group (its numeric
# gid on the host, found by scripts/render-compose.sh) with group_add. Anyone
# who can use the Docker socket is root-equivalent on the host; running lb
# unprivileged limits only what a bug in lb itself can do outside that API.
ARG BASE_IMAGE=spillway-base:bookworm
FROM ${BASE_IMAGE}
ARG BASE_IMAGE

RUN set -eu; \
    groupadd --system --gid 10002 lb; \
    useradd --system --uid 10002 --gid 10002 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin lb

COPY bin/lb /usr/local/bin/spillway-lb

# Inside a container lb must listen on all interfaces; compose publishes the
# port on 127.0.0.1 only.
ENV LB_LISTEN_HOST=0.0.0.0 \
    LOAD_BALANCER_PORT=8000
LABEL org.opencontainers.image.title="spillway-lb" \
      spillway.base="${BASE_IMAGE}"

USER 10002:10002
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/spillway-lb"]
