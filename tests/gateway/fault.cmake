# The gateway's handlers (watch.c, kv.c, keepalive.c) through member kills and leader failover,
# through fakecall against a real 3-member keel cluster: `test_gw_fault <group>`, one ctest entry
# per group (test_gw_fault.c says what each covers).
add_executable(test_gw_fault ${CMAKE_CURRENT_LIST_DIR}/test_gw_fault.c)
target_link_libraries(test_gw_fault PRIVATE keel_gw_testlib PkgConfig::CMOCKA Threads::Threads)
foreach(group watch_member_kill unary_leader_kill keepalive_leader_kill)
  add_test(NAME gateway_fault_${group} COMMAND test_gw_fault ${group})
  set_tests_properties(gateway_fault_${group} PROPERTIES LABELS gateway TIMEOUT 180
                       SKIP_RETURN_CODE 77)
endforeach()
