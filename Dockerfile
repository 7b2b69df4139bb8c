# ganserve on a GPU: CUDA 13 + cuDNN 9 runtime, onnxruntime-gpu, the shipped models baked in.
#
#   docker build -t ganserve .
#   docker run --gpus all -p 8500:8500 -p 8501:8501 ganserve
#   docker run --gpus all -v "$PWD/models:/models:ro" ganserve    # your repository instead
#
# Every server flag has a GANSERVE_* environment variable (docs/serving.md): -e GANSERVE_MAX_BATCH_SIZE=1024
# The image listens on all interfaces: beyond a private network, mount certificates and tokens
# and set GANSERVE_TLS_CERT, GANSERVE_TLS_KEY and GANSERVE_AUTH_TOKEN_FILE.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The base image's tag pins the distribution; its python3 follows Ubuntu's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first, so that code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY clients/ clients/
COPY training/ training/
COPY export/ export/
COPY server/ server/
# Versions come from pyproject.toml (the project itself is the thing installed).
# s3: the bulk jobs write to buckets (deploy/k8s/bulk-job.yaml).
# hadolint ignore=DL3013
RUN pip install ".[serve-gpu,s3]"

COPY models/ /models/
# the quality probe's instrument (--quality-probe-seconds; docs/serving.md "Quality monitor")
COPY judges/judge.onnx judges/judge.reference.npz /judges/

RUN useradd --create-home --uid 10001 ganserve
USER 10001

ENV GANSERVE_MODEL_REPOSITORY=/models \
    GANSERVE_HOST=0.0.0.0 \
    GANSERVE_PORT=8500 \
    GANSERVE_METRICS_PORT=8501 \
    GANSERVE_DEVICE=auto \
    GANSERVE_QUALITY_JUDGE=/judges/judge.onnx
EXPOSE 8500 8501

# Asks the gRPC health service: healthy once the models are loaded and warmed up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-m", "ganserve.server.healthcheck"]

ENTRYPOINT ["ganserve", "serve"]
