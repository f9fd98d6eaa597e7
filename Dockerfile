# The latentwire hub daemon (bus only: no torch, no model code is run).
#
#   docker build -t latentwire-hub .
#   docker run -d --name hub -p 7878:7878 -v latentwire-journal:/var/lib/latentwire latentwire-hub
#
# Every `latentwire hub` flag is also an environment variable, LATENTWIRE_HUB_<FLAG>
# (--session-expiry -> LATENTWIRE_HUB_SESSION_EXPIRY); flags after the image name win.
# docs/deployment.md covers the journal, restarts, TLS and the systemd unit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
# One distribution holds every package, so setuptools needs all their folders (see .dockerignore).
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY hub ./hub
COPY agents ./agents
COPY tinyworld ./tinyworld
COPY training ./training
COPY benchmarks ./benchmarks
RUN pip install . && rm -rf /build

COPY deploy/healthcheck.py /usr/local/lib/latentwire/healthcheck.py

# An unprivileged user owns the journal directory; mount a volume there to keep it.
RUN useradd --system --uid 10001 --home-dir /var/lib/latentwire --create-home latentwire
USER latentwire
WORKDIR /var/lib/latentwire
VOLUME ["/var/lib/latentwire"]

ENV LATENTWIRE_HUB_HOST=0.0.0.0 \
    LATENTWIRE_HUB_PORT=7878 \
    LATENTWIRE_HUB_JOURNAL=/var/lib/latentwire/journal.db
EXPOSE 7878

# The standard gRPC health service: SERVING while the hub accepts sessions, NOT_SERVING while
# it drains after SIGTERM (docker stop), so an orchestrator moves traffic away first.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "/usr/local/lib/latentwire/healthcheck.py"]

# docker stop sends SIGTERM: the hub drains (up to --drain-timeout s, default 10); give it
# longer than that before the SIGKILL: `docker stop -t 30` or `stop_grace_period: 30s`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["latentwire", "hub"]
