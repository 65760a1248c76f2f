/*
 * systemd's readiness protocol (sd_notify), without libsystemd: when $NOTIFY_SOCKET names a
 * unix datagram socket (a path, or "@name" for an abstract one), a state such as "READY=1" is
 * sent there; otherwise nothing happens. keeld says READY=1 once it serves clients and
 * STOPPING=1 when it begins to stop, so a Type=notify unit starts dependents only then.
 */
#ifndef KEEL_NOTIFY_H
#define KEEL_NOTIFY_H

/* Send state to $NOTIFY_SOCKET. 0 (also when there is none), or -1 with errno. */
int keel_notify(const char *state);

#endif
