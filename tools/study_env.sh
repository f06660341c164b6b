# Sourced by the Fashion-MNIST study scripts after `cd` to the repository root: where the data is,
# where runs go, and the ssl command (FASHION_MNIST and RUN_DIR override the first two).
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
RUN=${RUN_DIR:-runs}
SSL=.venv/bin/ssl
