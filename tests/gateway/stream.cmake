# The gateway's bidirectional streams (watch.c, keepalive.c) through fakecall against a real
# 3-member keel cluster: `test_gw_watch <group>`, one ctest entry per group.
add_executable(test_gw_watch ${CMAKE_CURRENT_LIST_DIR}/test_gw_watch.c)
target_link_libraries(test_gw_watch PRIVATE keel_gw_testlib)
foreach(group events history control slow leader)
  add_test(NAME gateway_watch_${group} COMMAND test_gw_watch ${group})
  set_tests_properties(gateway_watch_${group} PROPERTIES LABELS gateway TIMEOUT 120
                                                         SKIP_RETURN_CODE 77)
endforeach()
add_test(NAME gateway_keepalive COMMAND test_gw_watch keepalive)
set_tests_properties(gateway_keepalive PROPERTIES LABELS gateway TIMEOUT 120 SKIP_RETURN_CODE 77)
