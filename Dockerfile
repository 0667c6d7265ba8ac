# AINA Privacy Desk as a container image (README: "Deployment").
#   docker build -t aina-dsr .
#   docker run -d --env-file .env -v aina-dsr-data:/var/lib/aina-dsr aina-dsr
# The entrypoint (deploy/docker-entrypoint.sh) runs `aina-dsr db upgrade`, then `aina-dsr run`;
# other arguments are an aina-dsr command: `docker run --rm --env-file .env aina-dsr check`.
# With PostgreSQL, Redis and the webhook: compose.yaml.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project and its pinned dependencies in a venv -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aina-dsr
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY aina_dsr ./aina_dsr
COPY bot ./bot
COPY mail ./mail
COPY workflows ./workflows
# constraints.txt: the versions .ci/run tests with (README: "Reproducible installs").
RUN /opt/aina-dsr/bin/pip install -c constraints.txt .

# --- run: the venv alone, as an unprivileged user ------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/aina-dsr/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DSR_DATABASE_URL=sqlite:////var/lib/aina-dsr/aina-dsr.db \
    DSR_METRICS_PORT=9108 \
    DSR_METRICS_HOST=0.0.0.0 \
    DSR_TELEGRAM_WEBHOOK_LISTEN=0.0.0.0:8080
COPY --from=build /opt/aina-dsr /opt/aina-dsr
COPY deploy/docker-entrypoint.sh /usr/local/bin/aina-dsr-entrypoint
RUN chmod 0755 /usr/local/bin/aina-dsr-entrypoint \
    && groupadd --system --gid 10001 aina-dsr \
    && useradd --system --uid 10001 --gid aina-dsr --home-dir /var/lib/aina-dsr \
        --shell /usr/sbin/nologin aina-dsr \
    && install -d -o aina-dsr -g aina-dsr -m 0700 /var/lib/aina-dsr
# The SQLite database (when DSR_DATABASE_URL is not PostgreSQL) and any file a setting names.
WORKDIR /var/lib/aina-dsr
VOLUME ["/var/lib/aina-dsr"]
# Numeric, so that an orchestrator's "run as non-root" check can tell.
USER 10001:10001
# /metrics and /healthz (DSR_METRICS_PORT); the Telegram webhook (DSR_TELEGRAM_WEBHOOK_LISTEN).
EXPOSE 9108 8080
# /healthz answers 503 when the database does not answer or a part keeps crashing; urllib
# raises on it, so the check fails. No curl in a slim image: Python's standard library.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['DSR_METRICS_PORT'], timeout=8)"
ENTRYPOINT ["aina-dsr-entrypoint"]
CMD ["run"]
