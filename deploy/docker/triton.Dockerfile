# syntax=docker/dockerfile:1.7
# Triton for the platform: NVIDIA's tritonserver (CUDA, Python backend) + the model repository
# (deploy/triton/models: config.pbtxt + 1/model.py per model) + the Python packages its models import.
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t ghcr.io/annotation-platform/annotation-platform-triton:0.1.0 .
# Pinned: 25.01 = Triton 2.54, Ubuntu 24.04, Python 3.12 (the Python backend's stub uses this interpreter).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

# ---- deps: the model's Python packages installed into one folder (pip caches and wheels stay here)
FROM ${TRITON_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# numpy is deliberately not installed here: the Python backend's stub is built against the image's own
# numpy, which must stay the one imported (a numpy 2 beside a numpy-1 stub returns empty tensors).
ARG OPENCV_VERSION=4.10.0.84
# onnxruntime: the SAM / SAM 2 graphs on CPU pods (Python backend); GPU pods use the native onnxruntime backend.
ARG ONNXRUNTIME_VERSION=1.30.0
RUN python3 -m pip install --break-system-packages --target=/opt/model-deps "torch==${TORCH_VERSION}" \
      "opencv-python-headless==${OPENCV_VERSION}" "onnxruntime==${ONNXRUNTIME_VERSION}" \
 && rm -rf /opt/model-deps/numpy /opt/model-deps/numpy-* /opt/model-deps/numpy.libs

# ---- final
FROM ${TRITON_IMAGE}
COPY --from=deps /opt/model-deps /opt/model-deps
# The project modules the click model imports (GrabCut refinement): numpy + OpenCV only.
COPY services/__init__.py /opt/model-deps/services/__init__.py
COPY services/models/__init__.py services/models/grabcut.py services/models/click_disks.py /opt/model-deps/services/models/
# Python backend models import from here (python3.12 in 25.01; resolved at build time).
RUN site="$(python3 -c 'import site; print(site.getsitepackages()[0])')" \
 && mkdir -p "$site" && echo /opt/model-deps > "$site/model-deps.pth"
# The model repository (clickseg_lite0, the default, and clickseg: config.pbtxt for CPU, configs/gpu.pbtxt
# picked by the chart's --model-config-name=gpu); this image carries it read-only.
COPY --chown=root:root deploy/triton/models /models
ENV HOME=/tmp
# triton-server (uid 1000) is the non-root user of NVIDIA's image.
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--strict-readiness=true", "--allow-metrics=true"]
