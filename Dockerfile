# Two images from one file: `api` (no torch: serving only reads the database) and `worker` (torch, lucent).
FROM python:3.11-slim AS base
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY kb ./kb
COPY alembic ./alembic

FROM base AS api
RUN pip install .
EXPOSE 8000
CMD ["kb", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
RUN pip install --index-url ${TORCH_INDEX} torch torchvision && pip install '.[torch]'
CMD ["kb", "worker", "--queues", "render"]
