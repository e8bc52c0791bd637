# Stand-ins for the third-party images of deploy/compose.yaml, made from Debian bookworm
# packages on medseg-local/debian:bookworm (deploy/airgap/base-images.sh), for sites and test
# machines that cannot pull from Docker Hub. Used by deploy/compose.airgap.yaml:
#   redis      ~ redis:7.4-alpine          (Debian redis-server 7.0)
#   postgres   ~ postgres:16-alpine        (Debian postgresql-15; POSTGRES_USER/_PASSWORD/_DB)
#   prometheus ~ prom/prometheus:v2.55.1   (Debian prometheus 2.42)
#   orthanc    ~ orthancteam/orthanc       (Debian orthanc 1.10; a test PACS, see orthanc.json)
# They behave like the official images where compose.yaml relies on it: same commands, ports,
# data paths and healthcheck tools; each runs as its own unprivileged user.
ARG DEBIAN_IMAGE=medseg-local/debian:bookworm

FROM ${DEBIAN_IMAGE} AS redis
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
COPY redis-entrypoint.sh /usr/local/bin/
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]

FROM ${DEBIAN_IMAGE} AS postgres
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]

FROM ${DEBIAN_IMAGE} AS prometheus
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o prometheus -g prometheus -m 0750 /prometheus
USER prometheus
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

FROM ${DEBIAN_IMAGE} AS orthanc
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends orthanc wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o orthanc -g orthanc -m 0750 /var/lib/orthanc/db
COPY orthanc.json /etc/medseg-orthanc/orthanc.json
USER orthanc
VOLUME /var/lib/orthanc/db
EXPOSE 4242 8042
CMD ["Orthanc", "/etc/medseg-orthanc/orthanc.json"]
