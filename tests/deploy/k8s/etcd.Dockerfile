# The etcd image the etcd overlay's pods run in test_kubernetes.py: etcd
# from Debian 12's etcd-server package (etcd 3.4; `etcd` on the PATH, as
# the overlay's StatefulSet expects), built on the same local base image
# as the ltxfs image, so the test pulls nothing.
ARG BASE=debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      etcd-server \
 && rm -rf /var/lib/apt/lists/*
