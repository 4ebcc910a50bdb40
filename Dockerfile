# The project image: searchsvc + trainers + Ray + MLflow, CPU torch. Used by every service in
# docker-compose.yml (ray-head, ray-worker, mlflow, searchsvc).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0
RUN apt-get update && apt-get install -y --no-install-recommends curl procps \
    && rm -rf /var/lib/apt/lists/*
# CPU wheel of torch: a GPU image swaps this index for the CUDA one.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY searchsvc ./searchsvc
COPY trainers ./trainers
RUN pip install -c constraints.txt .
COPY studies ./studies
COPY deploy ./deploy
# Every volume mount point exists here, owned by the user the services run as: a fresh named
# volume takes the owner of the image's folder, so the server and trials can write to it.
RUN useradd --create-home --uid 1000 searchsvc \
    && mkdir -p /shared/runs /shared/data /shared/cache /mlartifacts \
    && chown -R searchsvc /shared /mlartifacts
USER searchsvc
