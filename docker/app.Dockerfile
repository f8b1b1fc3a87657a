# App image of the CGD repository: the base image (docker/app_base.Dockerfile) plus the code at
# /app and a non-root user. Rebuild it after code changes; only the last layers change.
#
# Build from the repository root (what `invoke docker.build-app-container` runs, with your own
# uid/gid so that files written to mounted directories belong to you):
#   docker build --file docker/app.Dockerfile --build-arg BASE_IMAGE=cgd-app-base:latest \
#       --build-arg USER_UID="$(id -u)" --build-arg USER_GID="$(id -g)" --tag cgd-app:latest .

ARG BASE_IMAGE=cgd-app-base:latest
FROM ${BASE_IMAGE}

ARG USER_NAME=cgd
ARG USER_UID=1000
ARG USER_GID=1000

# The user the container runs as. A uid or gid that the base image already uses is reused rather
# than refused (Ubuntu images ship a uid-1000 user); uid 0 is refused: that would be root.
RUN set -eux; \
    if [ "${USER_UID}" -eq 0 ]; then \
        echo "USER_UID=0 would run the container as root; pass a non-root uid" >&2; exit 1; \
    fi; \
    getent group "${USER_GID}" > /dev/null || groupadd --gid "${USER_GID}" "${USER_NAME}"; \
    useradd --non-unique --no-log-init --create-home --shell /bin/bash \
        --uid "${USER_UID}" --gid "${USER_GID}" "${USER_NAME}"

# The repository root is /app: `import net` works from anywhere, relative paths in config.yaml
# resolve as on the host, and TensorFlow's C++ logging stays quiet (errors only). The caches of
# matplotlib, pytest and ruff go to /tmp: /app is read-only for the user, and /tmp is writable
# whatever uid `docker run --user` picks.
ENV PYTHONPATH=/app \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTEST_ADDOPTS="-o cache_dir=/tmp/pytest_cache" \
    RUFF_CACHE_DIR=/tmp/ruff_cache
WORKDIR /app

# The shell as the seed's image had it: git, and tab completion of invoke's tasks in interactive
# bash shells (`invoke ml.<TAB>`). The completion script is invoke's own; bash-completion loads
# everything under /etc/bash_completion.d from /etc/bash.bashrc. /app is marked safe for git,
# since the baked-in code belongs to root and a mounted working tree (--mount-code) to the host
# user, neither of them the container user as git sees it.
RUN set -eux; \
    apt-get update; \
    apt-get install --yes --no-install-recommends bash-completion git; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /etc/bash_completion.d; \
    invoke --print-completion-script bash > /etc/bash_completion.d/invoke; \
    echo '[ -f /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion' >> /etc/bash.bashrc; \
    git config --system --add safe.directory /app

# Development tools (pytest, ruff, dockerfile) so the tests can run on the GPU machine. The
# requirement files come before the code so that this layer is cached across code changes;
# requirements.txt is a constraint, so nothing installed in the base image changes version.
COPY requirements.txt requirements-dev.txt /tmp/cgd/
RUN set -eux; \
    cd /tmp/cgd; \
    grep -vE '^[[:space:]]*(-r|--requirement)' requirements-dev.txt > requirements-dev-only.txt; \
    python -m pip install --requirement requirements-dev-only.txt --constraint requirements.txt

# The code, owned by root and read-only for the user; outputs go to mounted directories.
COPY . /app

USER ${USER_UID}:${USER_GID}
CMD ["bash"]
