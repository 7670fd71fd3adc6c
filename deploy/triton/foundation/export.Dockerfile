# syntax=docker/dockerfile:1.7
# The SAM / SAM 2 export tool (services/segmentation/export_foundation.py) with its own packages
# (requirements-export.txt: torch 2.14.1 + torchvision 0.29.1, segment-anything, sam2, onnx): the Helm chart
# runs it as an init container of each Triton pod when foundationModel.enabled (the checkpoint from a volume
# or object storage; nothing downloaded from a model hub). Build from the repository root:
#   docker build -f deploy/triton/foundation/export.Dockerfile -t ghcr.io/annotation-platform/annotation-platform-sam-export:0.1.0 .
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY deploy/triton/foundation/requirements-export.txt /opt/export/deploy/triton/foundation/
RUN cd /opt/export && python -m pip install $(grep -v -E '^(#|sam2==)' deploy/triton/foundation/requirements-export.txt) \
 && SAM2_BUILD_CUDA=0 python -m pip install --no-build-isolation $(grep -E '^sam2==' deploy/triton/foundation/requirements-export.txt)
COPY services/__init__.py /opt/export/services/__init__.py
COPY services/segmentation/__init__.py services/segmentation/export_foundation.py /opt/export/services/segmentation/
COPY deploy/triton/foundation/onnx_model.py /opt/export/deploy/triton/foundation/
WORKDIR /opt/export
USER 1000:1000
ENTRYPOINT ["python", "-m", "services.segmentation.export_foundation"]
