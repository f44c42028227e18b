# The prediction API (FastAPI + ONNX Runtime). No TensorFlow, no MLflow server: the `api` extra.
#   docker build -t stockcast-api .
#   docker run --rm -p 8000:8000 -e APP_SECRET_KEY=... -e DATABASE_URL=... stockcast-api
# The same image runs the one-shot migration: `docker run --rm --entrypoint alembic stockcast-api upgrade head`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, pinned by the lock (cached while both files are unchanged), then the
# project itself. The libraries' own test suites are dropped: nothing imports them at run time.
COPY pyproject.toml requirements.lock ./
RUN python -m venv /opt/venv \
    && mkdir -p common data_pipeline ml_lifecycle app \
    && pip install --no-cache-dir -c requirements.lock "./[api]" \
    && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stockcast-api" \
      org.opencontainers.image.description="stockcast prediction API (FastAPI, ONNX Runtime)" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 stockcast \
    && useradd --system --uid 10001 --gid stockcast --create-home --home-dir /home/stockcast \
       --shell /usr/sbin/nologin stockcast
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
RUN mkdir -p /app/var && chown stockcast:stockcast /app/var
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENVIRONMENT=production \
    APP_HOST=0.0.0.0 \
    APP_PORT=8000
USER 10001:10001
EXPOSE 8000
# The port the server listens on (APP_PORT), not a fixed one: `-e APP_PORT=9000` stays healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['APP_PORT'] + '/health', timeout=4)"]
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve"]
