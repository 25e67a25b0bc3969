#!/usr/bin/python3
# Damages checkpoints for the end-to-end integrity tests (Debian's python3 has h5py):
#   ckpt_tool.py extents FILE             "dataset offset size" of every stored tensor chunk
#   ckpt_tool.py flip FILE OFFSET MASK    byte at OFFSET ^= MASK, in place (raw bytes, no HDF5)
#   ckpt_tool.py exp-flip FILE DATASET N  flips an exponent bit (0x40 of the top byte) of N
#                                         floats spread over DATASET's first chunk, in place
#   ckpt_tool.py set-state FILE NAME V    rewrites /state attribute NAME as int64 V through
#                                         HDF5 (checksums stay valid: a value, not a corruption)
#   ckpt_tool.py set-state-str FILE NAME V  the same for a fixed-length string attribute
#                                         (as moe-train writes /state/precision, fp32_engine)
import sys
import h5py
import numpy as np


def extents(path):
    out = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                for i in range(obj.id.get_num_chunks()):
                    c = obj.id.get_chunk_info(i)
                    out.append(("/" + name, c.byte_offset, c.size))
        f.visititems(visit)
    return out


def flip(path, offset, mask):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


cmd = sys.argv[1]
if cmd == "extents":
    for name, off, size in extents(sys.argv[2]):
        print(name, off, size)
elif cmd == "flip":
    flip(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "exp-flip":
    path, dataset, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    off, size = [(o, s) for d, o, s in extents(path) if d == dataset][0]
    floats = (size - 4) // 4  # the last 4 bytes are the Fletcher32 checksum
    step = max(1, floats // n)
    for i in range(n):
        flip(path, off + 4 * ((i * step) % floats) + 3, 0x40)
elif cmd == "set-state":
    with h5py.File(sys.argv[2], "r+") as f:
        f["/state"].attrs.modify(sys.argv[3], np.int64(int(sys.argv[4])))
elif cmd == "set-state-str":
    with h5py.File(sys.argv[2], "r+") as f:
        attrs = f["/state"].attrs
        if sys.argv[3] in attrs:
            del attrs[sys.argv[3]]
        attrs.create(sys.argv[3], np.bytes_(sys.argv[4].encode("ascii")))
else:
    sys.exit("unknown command " + cmd)
