"""`python -m data_utils [DIR]`: find (or fetch) and verify the data, or say what to do (exit 2)."""

import sys

from data_utils.fashion import load_fashion_mnist
from data_utils.idx import DataError

try:
    data = load_fashion_mnist(sys.argv[1] if len(sys.argv) > 1 else None)
except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
print(f"FashionMNIST OK in {data.root} (train-images md5 {data.md5})")
