# The bluegreen GitHub Action's image (action.yml: runs.using docker).
#
# Dependencies are pinned with hashes; regenerate both locks after changing pyproject.toml:
#   uv pip compile pyproject.toml --extra kubernetes --extra servers --extra dns --extra aws --generate-hashes --universal --python-version 3.11 -o requirements/action.txt
#   uv pip compile requirements/build.in --generate-hashes --universal --python-version 3.11 -o requirements/build.txt
# then write the httpx2 line as `httpx2[http2,ws]==<version>`: lightkube asks for httpx2 with those extras, and
# pip's hash mode refuses a requirement with extras that the lock does not pin (it would fetch the newest).
# (--universal: one lock for the python:3.12-slim image and for Python 3.11 elsewhere; every
# platform's wheel hash is listed, so arm64 runners build it too.)
#
# GitHub runs container actions as root with the workspace as the working directory:
# no USER, no WORKDIR in the final stage.

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/ requirements/
# A venv without pip, holding only the runtime dependencies, each checked against its hash;
# wheels only, so no compiler is ever needed.
RUN python -m venv --without-pip /opt/bluegreen \
 && pip --python /opt/bluegreen/bin/python install --no-cache-dir --require-hashes --only-binary=:all: \
      -r requirements/action.txt \
 && pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml ./
COPY src/ src/
# The package itself, built with the pinned setuptools of this throw-away stage.
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && pip --python /opt/bluegreen/bin/python install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/bluegreen/bin:$PATH
# Only the venv crosses over: no pip cache, no setuptools, no sources.
COPY --from=build /opt/bluegreen /opt/bluegreen
ENTRYPOINT ["/opt/bluegreen/bin/python", "-m", "bluegreen.action"]
