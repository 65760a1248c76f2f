# The unary handlers (kv.c, lease.c, cluster.c, maint.c over unary.c) against a real 3-member
# keel cluster: one ctest entry per group (test_gw_unary.c says what each covers).
add_executable(test_gw_unary ${CMAKE_CURRENT_LIST_DIR}/test_gw_unary.c)
target_link_libraries(test_gw_unary PRIVATE keel_gw_testlib PkgConfig::CMOCKA)
foreach(group kv txn lease cluster cancel)
  add_test(NAME gateway_unary_${group} COMMAND test_gw_unary ${group})
  set_tests_properties(gateway_unary_${group} PROPERTIES LABELS gateway TIMEOUT 120
                       SKIP_RETURN_CODE 77)
endforeach()
