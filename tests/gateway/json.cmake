# etcd's JSON gateway: pbjson (protobuf <-> grpc-gateway v1 JSON, a unit test with strings
# captured from a real etcd 3.4.23) and http1.c end to end (a shell test: curl, raw sockets and
# python3-etcd3gw against a real keel-gateway in front of a real 3-member keel cluster).
add_executable(test_pbjson ${CMAKE_CURRENT_LIST_DIR}/test_pbjson.c)
target_link_libraries(test_pbjson PRIVATE keel_gateway PkgConfig::CMOCKA)
add_test(NAME gateway_pbjson COMMAND test_pbjson)
set_tests_properties(gateway_pbjson PROPERTIES LABELS gateway TIMEOUT 60)

add_test(NAME gateway_http1
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_http1.sh $<TARGET_FILE:keeld>
                 $<TARGET_FILE:keel-gateway>)
set_tests_properties(gateway_http1 PROPERTIES LABELS gateway TIMEOUT 240 SKIP_RETURN_CODE 77)
