# The sharq checkout whose pinned toolchains build this project: examples/strategies/tools.sh
# there says which versions and where they live. `sharq plugin new` wrote the checkout it was
# built from; set SHARQ_REPO to use another.
default_repo={{repo_sh}}
SHARQ_REPO="${SHARQ_REPO:-$default_repo}"
if [ ! -f "$SHARQ_REPO/examples/strategies/tools.sh" ]; then
    echo "build.sh: no sharq checkout at $SHARQ_REPO (examples/strategies/tools.sh is missing); set SHARQ_REPO to one" >&2
    exit 1
fi
# shellcheck source=/dev/null
. "$SHARQ_REPO/examples/strategies/tools.sh"
