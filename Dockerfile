# annotator image (CPU). GPU workers build the same image with a CUDA torch
# (--build-arg TORCH_SPEC="torch>=2.4,<3").
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
# Point TORCH_INDEX_URL at a CPU wheel index to keep the image small.
ARG TORCH_INDEX_URL=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY annotator annotator
COPY migrations migrations
COPY workers workers
COPY web web
RUN pip install --no-cache-dir "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
 && pip install --no-cache-dir ".[all]"
ENV ANNOTATOR_MEDIA_ROOT=/data/media
ENTRYPOINT ["annotator"]
