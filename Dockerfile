FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY authsvc ./authsvc
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home authsvc \
    && mkdir -p /keys /data && chown authsvc /keys /data
# Never root: the keys volume and the embedded store's data are the authsvc user's.
USER 10001
# On 0.0.0.0 there is no default issuer: give AUTHSVC_ISSUER, the URL clients use
# (docker run -e AUTHSVC_ISSUER=https://auth.example.com); without it authsvc will not start.
ENV AUTHSVC_HOST=0.0.0.0 AUTHSVC_PORT=8080 AUTHSVC_KEYS_DIR=/keys AUTHSVC_DATA_DIR=/data
EXPOSE 8080
# Longer than AUTHSVC_SHUTDOWN_TIMEOUT (30 s): give `docker stop -t 40` or stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# One container alone makes its key on first start. Several replicas must not: each would
# make its own. docker-compose.yml runs `authsvc keys generate` once, before them.
CMD ["sh", "-c", "ls /keys/*.pem >/dev/null 2>&1 || authsvc keys generate --dir /keys; exec authsvc serve"]
