/*
 * The preferred leader zone (--preferred-leader-zone Z): a leader outside Z hands leadership to
 * a member of Z that is caught up and answering, so that the leader sits where the clients that
 * matter are (the zone of the control plane's apiservers, say).
 *
 * Only a leader outside Z acts, so a leader inside Z never moves away and two members never
 * pass leadership back and forth. It looks once per election timeout, and after a move it asked
 * for waits ten election timeouts before the next (a member of Z that wins and then loses
 * leadership at once, because it is slow or cut off, is not handed it again and again).
 */
#ifndef KEEL_PREFER_H
#define KEEL_PREFER_H

#include <uv.h>

#include "config.h"
#include "members.h"
#include "node.h"

struct keel_prefer;

struct keel_prefer_options {
    uv_loop_t *loop;
    const struct keel_config *cfg; /* preferred_zone, this member's zone, the election timeout */
    struct keel_node *node;
    struct keel_members *members; /* each member's zone as the cluster knows it */
};

/* 0 or KEEL_ENOMEM; *out NULL when cfg names no preferred zone (nothing to do). What o points
 * to must outlive it. */
int keel_prefer_new(const struct keel_prefer_options *o, struct keel_prefer **out);

/* Stop looking and close the timer (it closes before the loop ends). NULL is fine. */
void keel_prefer_stop(struct keel_prefer *p);

/* After the loop ended. NULL is fine. */
void keel_prefer_free(struct keel_prefer *p);

#endif
