/* The fault suite's workload client process (tests/fault/workload.c). */
#ifndef KEEL_TEST_FAULT_WORKLOAD_H
#define KEEL_TEST_FAULT_WORKLOAD_H

/* `test_fault client ENDPOINTS SERIAL_ENDPOINT ID SEED OUT MAX_MS`, argv[0] being "client".
 * Returns the process's exit status. */
int fault_client_main(int argc, char **argv);

#endif
