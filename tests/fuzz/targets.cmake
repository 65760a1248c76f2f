# The fuzz targets, one fuzz_<name>.c each: read by tests/fuzz/CMakeLists.txt (the clang build
# that makes them) and by tests/CMakeLists.txt (the ctest entries that run them).
set(KEEL_FUZZ_TARGETS frame request apply handshake ctl_args ctl_txn gw_json gw_grpc)
