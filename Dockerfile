# portainer.py server image. No base image can be pulled on an air-gapped build host: pass a local one with
#   docker build --build-arg BASE=local/python-base:bookworm .
# (README "Container image" shows how to make it with debootstrap). The base needs python3 with aiohttp,
# PyYAML and cryptography (Debian: python3-aiohttp python3-yaml python3-cryptography).
ARG BASE=python:3.12-slim
FROM ${BASE}

RUN python3 -c "import aiohttp, yaml, cryptography" 2>/dev/null || pip install --no-cache-dir "aiohttp>=3.8,<4" PyYAML cryptography; \
    (getent passwd portainer >/dev/null || useradd --uid 1000 --no-create-home --home-dir /data --shell /usr/sbin/nologin portainer) && \
    mkdir -p /data /app && chown portainer /data && chmod 700 /data
COPY portainer.py agent.py LICENSE /app/

ENV PORTAINER_DATA=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 9000 9443 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:9000/api/status', timeout=4)"]
# Started as root only to join the Docker socket's group, then runs as the unprivileged user 'portainer'.
ENTRYPOINT ["/bin/sh", "-c", "\
  groups=''; if [ -S /var/run/docker.sock ]; then groups=$(stat -c %g /var/run/docker.sock); fi; \
  chown portainer /data 2>/dev/null; \
  if [ \"$(id -u)\" = 0 ]; then exec setpriv --reuid=portainer --regid=portainer ${groups:+--groups=$groups} \
     --inh-caps=-all python3 /app/portainer.py \"$@\"; else exec python3 /app/portainer.py \"$@\"; fi", "portainer.py"]
