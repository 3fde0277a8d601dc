FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY authsvc ./authsvc
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 authsvc \
    && mkdir -p /keys /data && chown authsvc /keys /data
USER authsvc
ENV AUTHSVC_HOST=0.0.0.0 AUTHSVC_PORT=8080 AUTHSVC_KEYS_DIR=/keys AUTHSVC_DATA_DIR=/data
EXPOSE 8080
# A key is generated on first start into the /keys volume; mount your own to share one.
CMD ["sh", "-c", "ls /keys/*.pem >/dev/null 2>&1 || authsvc keys generate --dir /keys; exec authsvc serve"]
