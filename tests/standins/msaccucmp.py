#!/usr/bin/env python3
"""STAND-IN for CANN's msaccucmp.py (tools/operator_cmp/compare), for vlc's tests only.

Only `convert -d DUMP [-out DIR] [-t npy]` without `-f`: it reads the stand-in dump files the
stand-in ais_bench writes (not ACL's binary format) and writes one .npy per tensor named as the
documented conversion names them, "<dump file name>.<output|input>.<index>.<shape>.npy" with the
shape as 1x3x224x224, in the layout the dump holds (no format conversion without -f).
"""

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MARKER = "VLC-STANDIN-DUMP"


def dump_files(spec):
    """-d: one file, a folder (its files, not recursive) or a comma-separated list of files."""
    files = []
    for part in spec.split(","):
        path = Path(part)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"[ERROR] The path {part} does not exist.")
    return files


def convert(args):
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    converted = 0
    for path in dump_files(args.dump_file):
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            print(f"[WARNING] {path.name} is not a dump file, skipped")
            continue
        with archive:
            if MARKER not in archive.namelist():
                print(f"[WARNING] {path.name} is not a stand-in dump file, skipped")
                continue
            for member in sorted(archive.namelist()):
                if not member.endswith(".npy"):
                    continue
                io_kind, index, _ = member.split(".")
                array = np.load(io.BytesIO(archive.read(member)))
                shape = "x".join(str(d) for d in array.shape)
                np.save(out / f"{path.name}.{io_kind}.{index}.{shape}.npy", array)
                converted += 1
    print(f"[INFO] The dump data has been converted: {converted} file(s) in {out}")
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog="msaccucmp.py (stand-in)")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert")
    conv.add_argument("-d", "--dump_file", required=True)
    conv.add_argument("-out", "--output", default=".")
    conv.add_argument("-t", "--type", default="npy", choices=["npy"])
    conv.add_argument("-v", "--version", default="2")
    conv.add_argument("-f", "--format", default=None)
    args = parser.parse_args(argv)
    if args.format is not None:
        raise SystemExit("[ERROR] the stand-in converts without -f only (no format conversion)")
    return convert(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
