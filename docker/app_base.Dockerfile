# GPU base image of the CGD repository: the official TensorFlow GPU image of the version that
# requirements.txt pins, the repository's other requirements, and the ResNet-50 ImageNet weights,
# so that training in the container never downloads anything. Rebuild it only when the
# requirements change; the code goes into docker/app.Dockerfile on top of it.
#
# Build from the repository root (what `invoke docker.build-app-base-container` runs):
#   docker build --file docker/app_base.Dockerfile --build-arg TF_VERSION=2.21.0 \
#       --tag cgd-app-base:latest .

# Must equal the `tensorflow==` pin in requirements.txt: the invoke task passes the pin,
# tests/test_docker.py checks this default, and the build fails below on a mismatch.
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

# KERAS_HOME is fixed (not ~/.keras) so that Keras finds the weights whatever user and HOME the
# container runs with. PIP_BREAK_SYSTEM_PACKAGES lets pip install into the image's system Python
# when that Python is marked externally managed (PEP 668); older pips ignore it.
ENV KERAS_HOME=/opt/keras \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY requirements.txt /tmp/cgd/requirements.txt

# One TensorFlow in the image, the GPU build that the base image ships:
# - the `tensorflow` line is filtered out of requirements.txt, so pip is never asked for it (a
#   plain `pip install -r requirements.txt` could replace it with a PyPI wheel of another
#   build);
# - the TensorFlow packages already installed are passed as constraints (`pip list
#   --format=freeze` prints name==version even for wheels installed from files), so a
#   requirement that depends on TensorFlow makes pip fail instead of swapping it;
# - finally the installed version must equal the pin.
RUN set -eux; \
    cd /tmp/cgd; \
    grep -viE '^[[:space:]]*tensorflow[[:space:]]*([=<>~!;[]|$)' requirements.txt \
        > requirements-image.txt; \
    { python -m pip list --format=freeze | grep -iE '^tensorflow' || true; } \
        > constraints-image.txt; \
    python -m pip install --requirement requirements-image.txt \
        --constraint constraints-image.txt; \
    pinned="$(sed -nE 's/^[[:space:]]*tensorflow[[:space:]]*==[[:space:]]*([^[:space:];#]+).*/\1/p' requirements.txt)"; \
    installed="$(python -c 'import importlib.metadata as m; print(m.version("tensorflow"))')"; \
    if [ "${installed}" != "${pinned}" ]; then \
        echo "image TensorFlow ${installed} != requirements.txt pin ${pinned}" >&2; exit 1; \
    fi

# The ResNet-50 ImageNet weights without the classifier ("notop"), fetched by the same Keras call
# the backbone makes, so file name and hash check are Keras's own. They land in
# ${KERAS_HOME}/models/, where Keras looks first. Keras uses KERAS_HOME only when the running
# user may write to it (else it falls back to /tmp/.keras and downloads again), so its folders
# are world-writable with the sticky bit, like /tmp; the files stay read-only for others.
RUN set -eux; \
    python -c "import keras; keras.applications.ResNet50(weights='imagenet', include_top=False)"; \
    test -s "${KERAS_HOME}/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"; \
    find "${KERAS_HOME}" -type d -exec chmod 1777 {} +; \
    find "${KERAS_HOME}" -type f -exec chmod a+r {} +
