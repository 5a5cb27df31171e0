"""Convert a uchar NRRD (raw or gzip encoding), as plastimatch writes, to raw bytes.

Usage: nrrd_to_raw.py in.nrrd out.raw; prints the sizes (x y z), the space origin (3 values) and
the space directions (3 vectors of 3 values), whitespace-separated. Only what plastimatch writes
is supported; anything else fails loudly.
"""
import gzip
import sys

import numpy as np

src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
end = data.index(b"\n\n")
header = {}
for line in data[:end].decode("ascii").splitlines()[1:]:
    if line.startswith("#") or ":" not in line:
        continue
    k, v = line.split(":", 1)
    header[k.strip()] = v.strip()
body = data[end + 2:]
enc = header.get("encoding", "raw")
if enc in ("gzip", "gz"):
    body = gzip.decompress(body)
elif enc != "raw":
    sys.exit("unsupported encoding " + enc)
types = {"uchar": np.uint8, "unsigned char": np.uint8, "uint8": np.uint8, "uint8_t": np.uint8}
if header["type"] not in types:
    sys.exit("unsupported type " + header["type"])
sizes = [int(x) for x in header["sizes"].split()]
if len(sizes) != 3:
    sys.exit("want 3 dimensions, got %s" % sizes)
arr = np.frombuffer(body, dtype=types[header["type"]])
if arr.size != sizes[0] * sizes[1] * sizes[2]:
    sys.exit("%d values for sizes %s" % (arr.size, sizes))
(arr != 0).astype(np.uint8).tofile(dst)
origin = [float(v) for v in header["space origin"].strip("()").split(",")]
dirs = [float(v) for d in header["space directions"].split() for v in d.strip("()").split(",")]
if len(origin) != 3 or len(dirs) != 9:
    sys.exit("unexpected space origin %r or directions %r" % (header["space origin"], header["space directions"]))
print(*sizes, *origin, *dirs)
