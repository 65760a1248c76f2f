# Real, unmodified etcd clients from Debian (etcdctl 3.4, Go clientv3, python3-etcd3gw), each run
# against a real etcd 3.4 (the oracle) and against keel-gateway in front of a real 3-member keel
# cluster, with the results compared (tests/gateway/compat/). A test whose client or etcd is
# missing reports itself skipped (77). Each test owns five 127.0.x.1 blocks (lib.sh), so they
# run in parallel with each other and with the other tests.
set(GW_COMPAT_DIR ${CMAKE_CURRENT_SOURCE_DIR}/compat)

add_test(NAME gateway_compat_etcdctl
         COMMAND bash ${GW_COMPAT_DIR}/etcdctl.sh $<TARGET_FILE:keel-gateway> $<TARGET_FILE:keeld>
                 $<TARGET_FILE:keelctl>)
add_test(NAME gateway_compat_clientv3
         COMMAND bash ${GW_COMPAT_DIR}/clientv3.sh $<TARGET_FILE:keel-gateway> $<TARGET_FILE:keeld>
                 ${CMAKE_CURRENT_BINARY_DIR}/compat-go)
add_test(NAME gateway_compat_etcd3gw
         COMMAND bash ${GW_COMPAT_DIR}/etcd3gw.sh $<TARGET_FILE:keel-gateway> $<TARGET_FILE:keeld>)
set_tests_properties(gateway_compat_etcdctl gateway_compat_clientv3 gateway_compat_etcd3gw
                     PROPERTIES LABELS gateway TIMEOUT 300 SKIP_RETURN_CODE 77)

# keel-gateway with TLS (and keel with peer TLS behind it), with the real etcdctl 3.4: --cacert
# --cert --key, certificate errors, --client-cert-auth, SIGHUP (issue 16).
add_test(NAME gateway_compat_etcdctl_tls
         COMMAND bash ${GW_COMPAT_DIR}/etcdctl_tls.sh $<TARGET_FILE:keel-gateway> $<TARGET_FILE:keeld>
                 ${PROJECT_SOURCE_DIR}/scripts/gen-certs.sh)
set_tests_properties(gateway_compat_etcdctl_tls PROPERTIES LABELS gateway TIMEOUT 300 SKIP_RETURN_CODE 77)

# etcd's users, roles and permissions through keel-gateway (issue 16): etcdctl 3.4 --user against
# a real etcd 3.4 and keel-gateway, step by step; then --cacert --cert --key --user over TLS.
add_test(NAME gateway_compat_etcdctl_auth
         COMMAND bash ${GW_COMPAT_DIR}/etcdctl_auth.sh $<TARGET_FILE:keel-gateway> $<TARGET_FILE:keeld>
                 ${PROJECT_SOURCE_DIR}/scripts/gen-certs.sh)
set_tests_properties(gateway_compat_etcdctl_auth PROPERTIES LABELS gateway TIMEOUT 300
                     SKIP_RETURN_CODE 77)
