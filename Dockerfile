# One image for every role; the command picks it (see deploy/docker-compose.yml):
#   conveyor serve --host 0.0.0.0   the API and dashboard (the default below)
#   conveyor worker | beat | flower  the Celery side
#   conveyor db upgrade              the migrations, once per release
#
#   docker build -t conveyor .
#   docker run -p 8000:8000 -e CONVEYOR_API_KEYS=mykey=me conveyor
#
# serve refuses a public address without CONVEYOR_API_KEYS (key=tenant,...):
# the keys come from the environment, never from the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# the media workload's video, m4a and probing run the ffmpeg CLI
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY conveyor ./conveyor
RUN pip install ".[all]"

# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a number.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/conveyor conveyor \
    && mkdir -p /data \
    && chown conveyor:conveyor /data
ENV CONVEYOR_DATA_DIR=/data
VOLUME ["/data"]
USER 10001:10001

EXPOSE 8000
# /health asks the Celery workers too (a few seconds); 503 only when the
# service cannot take work at all.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CONVEYOR_PORT', '8000'), timeout=9)"]

CMD ["conveyor", "serve", "--host", "0.0.0.0"]
