"""STAND-IN for Huawei's ais_bench, for vlc's tests only (see tests/standins/README.md)."""
