# The gateway's transport (gateway/grpcwire.c, listen.c, h2.c).
# gateway_grpcwire: gRPC framing, grpc-message and grpc-timeout on bytes alone.
add_executable(test_grpcwire ${CMAKE_CURRENT_SOURCE_DIR}/test_grpcwire.c)
target_link_libraries(test_grpcwire PRIVATE keel_gateway PkgConfig::CMOCKA)
add_test(NAME gateway_grpcwire COMMAND test_grpcwire)
set_tests_properties(gateway_grpcwire PROPERTIES LABELS gateway TIMEOUT 60)

# gateway_h2: a real keel-gateway process in front of a real 3-member keel cluster, driven with
# nghttp2's client API over TCP: SETTINGS first, PING, Trailers-Only errors, size and decode
# errors, garbage, GOAWAY on SIGTERM (test_h2.c lists them).
add_executable(test_h2 ${CMAKE_CURRENT_SOURCE_DIR}/test_h2.c)
# (nghttp2 comes with keel_gateway, which links it PUBLIC.)
target_link_libraries(test_h2 PRIVATE keel_gateway keel_testcluster PkgConfig::CMOCKA)
target_compile_definitions(test_h2 PRIVATE KEEL_GATEWAY_PATH="$<TARGET_FILE:keel-gateway>")
add_dependencies(test_h2 keel-gateway keeld)
add_test(NAME gateway_h2 COMMAND test_h2)
set_tests_properties(gateway_h2 PROPERTIES LABELS gateway TIMEOUT 180 SKIP_RETURN_CODE 77)
