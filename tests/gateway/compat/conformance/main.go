// conformance: one scenario list of etcd clientv3 (Debian's etcd 3.4) calls against an endpoint,
// results printed as JSON lines with revisions relative to a marker put at the start, so that a
// run against a real etcd and one against keel-gateway can be compared field by field.
//
//	conformance run ENDPOINT > out.jsonl
//	conformance compare ORACLE.jsonl GATEWAY.jsonl   (exit 1 on any difference)
//
// Scenarios: put/get/delete; kube-apiserver's txn shapes (create MOD(k)=0 -> Put with lease,
// update MOD(k)=rev -> Put else Range, delete MOD(k)=rev -> Delete else Range, reading
// Responses[0].response_put.header.revision); list with limit + continue at a fixed revision;
// a Watch with WithRequireLeader + WithRev + WithPrevKV + WithProgressNotify and RequestProgress
// on the same ctx; a key under a lease; compaction, then a watch from a compacted revision
// getting ErrCompacted; Grant/KeepAliveOnce/TimeToLive/Leases/Revoke; Status; MemberList; the
// error codes and messages clients act on. Every call has a deadline; every wait is bounded.
//
// Built in GOPATH mode, offline, against Debian's golang-etcd-server-dev (tests/gateway/compat/
// clientv3.sh), as bench/etcd-driver is.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/mvcc/mvccpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

type rec map[string]interface{}

var (
	cli *clientv3.Client
	r0  int64 // the marker put's revision
	out = json.NewEncoder(os.Stdout)
)

// rel: a revision relative to the marker ("R+k"), 0 stays 0.
func rel(r int64) interface{} {
	if r == 0 {
		return 0
	}
	return fmt.Sprintf("R%+d", r-r0)
}

func emit(step string, r rec) {
	r["step"] = step
	if err := out.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// errRec: what clients act on, the gRPC code and etcd's message.
func errRec(err error) rec {
	if err == nil {
		return rec{"err": nil}
	}
	r := rec{"err": rpctypes.ErrorDesc(err)}
	// clientv3 turns etcd's known messages into rpctypes.EtcdError (keeping the code): a
	// message it does not know stays a plain status error, which shows here as etcd_error false.
	if ev, ok := err.(rpctypes.EtcdError); ok {
		r["code"] = ev.Code().String()
		r["etcd_error"] = true
	} else if s, ok := status.FromError(err); ok {
		r["code"] = s.Code().String()
		r["etcd_error"] = false
	} else {
		r["code"] = "not-a-status: " + err.Error()
	}
	return r
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func hdr(h *pb.ResponseHeader) rec {
	if h == nil {
		return rec{"nil": true}
	}
	return rec{"revision": rel(h.Revision), "ids_set": h.ClusterId != 0 && h.MemberId != 0}
}

func kvs(list []*mvccpb.KeyValue) []rec {
	res := []rec{}
	for _, kv := range list {
		res = append(res, kvRec(kv))
	}
	return res
}

func kvRec(kv *mvccpb.KeyValue) rec {
	if kv == nil {
		return nil
	}
	return rec{"key": string(kv.Key), "value": string(kv.Value), "create": rel(kv.CreateRevision),
		"mod": rel(kv.ModRevision), "version": kv.Version, "has_lease": kv.Lease != 0}
}

func must(step string, err error) bool {
	if err != nil {
		emit(step, rec{"fatal": errRec(err)})
		return false
	}
	return true
}

func get(step, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	c, cancel := ctx()
	defer cancel()
	resp, err := cli.Get(c, key, opts...)
	if err != nil {
		emit(step, errRec(err))
		return nil
	}
	emit(step, rec{"header": hdr(resp.Header), "kvs": kvs(resp.Kvs), "more": resp.More, "count": resp.Count})
	return resp
}

func put(step, key, val string, opts ...clientv3.OpOption) int64 {
	c, cancel := ctx()
	defer cancel()
	resp, err := cli.Put(c, key, val, opts...)
	if err != nil {
		emit(step, errRec(err))
		return 0
	}
	emit(step, rec{"header": hdr(resp.Header), "prev_kv": kvRec(resp.PrevKv)})
	return resp.Header.Revision
}

func txn(step string, cmp []clientv3.Cmp, then, els []clientv3.Op) *clientv3.TxnResponse {
	c, cancel := ctx()
	defer cancel()
	resp, err := cli.Txn(c).If(cmp...).Then(then...).Else(els...).Commit()
	if err != nil {
		emit(step, errRec(err))
		return nil
	}
	rs := []rec{}
	for _, r := range resp.Responses {
		switch x := r.Response.(type) {
		case *pb.ResponseOp_ResponsePut:
			// kube-apiserver reads Responses[0].response_put.header.revision
			rs = append(rs, rec{"put": rec{"header": hdr(x.ResponsePut.Header), "prev_kv": kvRec(x.ResponsePut.PrevKv)}})
		case *pb.ResponseOp_ResponseRange:
			rs = append(rs, rec{"range": rec{"header": hdr(x.ResponseRange.Header),
				"kvs": kvs(x.ResponseRange.Kvs), "count": x.ResponseRange.Count, "more": x.ResponseRange.More}})
		case *pb.ResponseOp_ResponseDeleteRange:
			rs = append(rs, rec{"delete": rec{"header": hdr(x.ResponseDeleteRange.Header),
				"deleted": x.ResponseDeleteRange.Deleted, "prev_kvs": kvs(x.ResponseDeleteRange.PrevKvs)}})
		case *pb.ResponseOp_ResponseTxn:
			rs = append(rs, rec{"txn": rec{"header": hdr(x.ResponseTxn.Header), "succeeded": x.ResponseTxn.Succeeded,
				"responses": len(x.ResponseTxn.Responses)}})
		default:
			rs = append(rs, rec{"other": fmt.Sprintf("%T", r.Response)})
		}
	}
	emit(step, rec{"header": hdr(resp.Header), "succeeded": resp.Succeeded, "responses": rs})
	return resp
}

func eventRecs(evs []*clientv3.Event) []rec {
	res := []rec{}
	for _, e := range evs {
		res = append(res, rec{"type": e.Type.String(), "kv": kvRec(e.Kv), "prev_kv": kvRec(e.PrevKv)})
	}
	return res
}

// collect reads a watch channel until n events arrived (or the channel closed, or d passed).
func collect(wch clientv3.WatchChan, n int, d time.Duration) ([]*clientv3.Event, []rec) {
	var evs []*clientv3.Event
	var notes []rec
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(evs) < n {
		select {
		case wr, ok := <-wch:
			if !ok {
				notes = append(notes, rec{"closed": true})
				return evs, notes
			}
			if wr.Err() != nil || wr.Canceled {
				notes = append(notes, rec{"canceled": wr.Canceled, "compact_revision": rel(wr.CompactRevision), "err": errRec(wr.Err())["err"]})
				return evs, notes
			}
			if wr.Header.Revision < 0 {
				notes = append(notes, rec{"negative_header_revision": true})
			}
			evs = append(evs, wr.Events...)
		case <-timer.C:
			notes = append(notes, rec{"timeout_after_events": len(evs)})
			return evs, notes
		}
	}
	return evs, notes
}

func run(endpoint string) {
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.FatalLevel)
	var err error
	cli, err = clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, LogConfig: &lc})
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(2)
	}
	defer cli.Close()

	// marker: revisions below are relative to it
	c, cancel := ctx()
	mresp, err := cli.Put(c, "/conformance/marker", "m")
	cancel()
	if !must("marker", err) {
		return
	}
	r0 = mresp.Header.Revision
	emit("marker", rec{"ids_set": mresp.Header.ClusterId != 0 && mresp.Header.MemberId != 0, "raft_term_set": mresp.Header.RaftTerm != 0})

	// put / get / delete
	put("put", "/kv/a", "1")
	put("put-prev-kv", "/kv/a", "2", clientv3.WithPrevKV())
	put("put-b", "/kv/b", "3")
	get("get", "/kv/a")
	get("get-missing", "/kv/nope")
	get("get-prefix", "/kv/", clientv3.WithPrefix())
	get("get-old-rev", "/kv/a", clientv3.WithRev(r0+1)) // header revision: the current one
	get("get-serializable", "/kv/", clientv3.WithPrefix(), clientv3.WithSerializable())
	get("get-count-only", "/kv/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	get("get-keys-only", "/kv/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	get("get-sort-desc", "/kv/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend))
	get("get-min-mod", "/kv/", clientv3.WithPrefix(), clientv3.WithMinModRev(r0+2))
	get("get-future-rev", "/kv/a", clientv3.WithRev(r0+100000))
	put("put-empty-key", "", "x")
	{
		c, cancel := ctx()
		d, err := cli.Delete(c, "/kv/b", clientv3.WithPrevKV())
		cancel()
		if err != nil {
			emit("delete-prev-kv", errRec(err))
		} else {
			emit("delete-prev-kv", rec{"header": hdr(d.Header), "deleted": d.Deleted, "prev_kvs": kvs(d.PrevKvs)})
		}
		c, cancel = ctx()
		d, err = cli.Delete(c, "/kv/nope")
		cancel()
		if err != nil {
			emit("delete-missing", errRec(err))
		} else {
			emit("delete-missing", rec{"header": hdr(d.Header), "deleted": d.Deleted})
		}
	}

	// a watch the k8s way, from now on: RequireLeader ctx, WithRev, WithPrevKV, WithProgressNotify
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer wcancel()
	gr := get("watch-start-rev", "/registry/")
	startRev := int64(0)
	if gr != nil {
		startRev = gr.Header.Revision + 1
	}
	wch := cli.Watch(wctx, "/registry/", clientv3.WithPrefix(), clientv3.WithRev(startRev),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify())

	// kube-apiserver's txn shapes
	c, cancel = ctx()
	lg, err := cli.Grant(c, 60)
	cancel()
	leaseID := clientv3.LeaseID(0)
	if must("grant-for-create", err) {
		leaseID = lg.ID
		emit("grant-for-create", rec{"header": hdr(lg.ResponseHeader), "ttl": lg.TTL, "id_set": lg.ID != 0})
	}
	key := "/registry/pods/default/p"
	create := func(step, val string) *clientv3.TxnResponse {
		return txn(step, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(key, val, clientv3.WithLease(leaseID))}, nil)
	}
	tr := create("k8s-create", "v1")
	created := int64(0)
	if tr != nil && len(tr.Responses) > 0 {
		if p := tr.Responses[0].GetResponsePut(); p != nil && p.Header != nil {
			created = p.Header.Revision
		}
	}
	create("k8s-create-exists", "v1-again")
	update := func(step string, rev int64, val string) *clientv3.TxnResponse {
		return txn(step, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)},
			[]clientv3.Op{clientv3.OpPut(key, val)}, []clientv3.Op{clientv3.OpGet(key)})
	}
	tr = update("k8s-update", created, "v2")
	updated := int64(0)
	if tr != nil && tr.Succeeded && len(tr.Responses) > 0 {
		if p := tr.Responses[0].GetResponsePut(); p != nil && p.Header != nil {
			updated = p.Header.Revision
		}
	}
	update("k8s-update-stale", created, "v3")
	del := func(step string, rev int64) {
		txn(step, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)},
			[]clientv3.Op{clientv3.OpDelete(key)}, []clientv3.Op{clientv3.OpGet(key)})
	}
	del("k8s-delete-stale", created)
	del("k8s-delete", updated)
	txn("k8s-compactor-cas", []clientv3.Cmp{clientv3.Compare(clientv3.Version("compact_rev_key"), "=", 0)},
		[]clientv3.Op{clientv3.OpPut("compact_rev_key", "1")}, []clientv3.Op{clientv3.OpGet("compact_rev_key")})
	txn("txn-multi-op", []clientv3.Cmp{clientv3.Compare(clientv3.Value("/kv/a"), "=", "2"), clientv3.Compare(clientv3.CreateRevision("/kv/zz"), "=", 0)},
		[]clientv3.Op{clientv3.OpPut("/kv/t", "x", clientv3.WithPrevKV()), clientv3.OpGet("/kv/", clientv3.WithPrefix(), clientv3.WithCountOnly()), clientv3.OpDelete("/kv/t", clientv3.WithPrevKV())}, nil)
	{
		var ops []clientv3.Op
		for i := 0; i < 129; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/kv/many/%d", i), "x"))
		}
		txn("txn-too-many-ops", nil, ops, nil)
		txn("txn-duplicate-key", nil, []clientv3.Op{clientv3.OpPut("/kv/dup", "1"), clientv3.OpPut("/kv/dup", "2")}, nil)
	}

	// list with limit + continue at a fixed revision (the reflector's paging)
	for i := 0; i < 7; i++ {
		put(fmt.Sprintf("list-put-%d", i), fmt.Sprintf("/registry/cm/ns/c%d", i), fmt.Sprintf("v%d", i))
	}
	prefix := "/registry/cm/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	listRev := int64(0)
	for page := 0; page < 5; page++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(3)}
		if listRev != 0 {
			opts = append(opts, clientv3.WithRev(listRev))
		}
		resp := get(fmt.Sprintf("list-page-%d", page), from, opts...)
		if resp == nil {
			break
		}
		if listRev == 0 {
			listRev = resp.Header.Revision
			// a write between pages must not show in the later pages
			put("list-concurrent-put", "/registry/cm/ns/c9", "late")
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}

	// a key under a lease, then the lease calls
	c, cancel = ctx()
	lg2, err := cli.Grant(c, 60)
	cancel()
	if must("grant", err) {
		emit("grant", rec{"header": hdr(lg2.ResponseHeader), "ttl": lg2.TTL, "id_set": lg2.ID != 0, "error": lg2.Error})
		put("put-with-lease", "/registry/events/e1", "ev", clientv3.WithLease(lg2.ID))
		get("get-leased-key", "/registry/events/e1")
		c, cancel = ctx()
		ka, err := cli.KeepAliveOnce(c, lg2.ID)
		cancel()
		if err != nil {
			emit("keepalive-once", errRec(err))
		} else {
			emit("keepalive-once", rec{"header": hdr(ka.ResponseHeader), "ttl": ka.TTL, "same_id": ka.ID == lg2.ID})
		}
		c, cancel = ctx()
		tl, err := cli.TimeToLive(c, lg2.ID, clientv3.WithAttachedKeys())
		cancel()
		if err != nil {
			emit("timetolive", errRec(err))
		} else {
			keys := []string{}
			for _, k := range tl.Keys {
				keys = append(keys, string(k))
			}
			emit("timetolive", rec{"header": hdr(tl.ResponseHeader), "granted": tl.GrantedTTL,
				"ttl_in_range": tl.TTL > 0 && tl.TTL <= tl.GrantedTTL, "keys": keys, "same_id": tl.ID == lg2.ID})
		}
		c, cancel = ctx()
		ll, err := cli.Leases(c)
		cancel()
		if err != nil {
			emit("leases", errRec(err))
		} else {
			found := 0
			for _, l := range ll.Leases {
				if l.ID == lg2.ID || l.ID == leaseID {
					found++
				}
			}
			emit("leases", rec{"header": hdr(ll.ResponseHeader), "count": len(ll.Leases), "found_ours": found})
		}
		c, cancel = ctx()
		rv, err := cli.Revoke(c, lg2.ID)
		cancel()
		if err != nil {
			emit("revoke", errRec(err))
		} else {
			emit("revoke", rec{"header": hdr(rv.Header)})
		}
		get("get-after-revoke", "/registry/events/e1")
		c, cancel = ctx()
		_, err = cli.Revoke(c, lg2.ID)
		cancel()
		emit("revoke-again", errRec(err))
		c, cancel = ctx()
		_, err = cli.KeepAliveOnce(c, lg2.ID)
		cancel()
		emit("keepalive-once-revoked", errRec(err))
		c, cancel = ctx()
		tl, err = cli.TimeToLive(c, lg2.ID)
		cancel()
		if err != nil {
			emit("timetolive-revoked", errRec(err))
		} else {
			emit("timetolive-revoked", rec{"ttl": tl.TTL, "granted": tl.GrantedTTL})
		}
		c, cancel = ctx()
		_, err = cli.Put(c, "/kv/l", "x", clientv3.WithLease(lg2.ID))
		cancel()
		emit("put-unknown-lease", errRec(err))
	}
	c, cancel = ctx()
	lmin, err := cli.Grant(c, 1)
	cancel()
	if err != nil {
		emit("grant-min-ttl", errRec(err))
	} else {
		emit("grant-min-ttl", rec{"ttl": lmin.TTL})
	}

	// the watch: every event above under /registry/, in order, then a progress notify on the
	// same ctx at the current revision
	expect := 3 + 7 + 1 + 2 // pod create/update/delete, 7 list puts, late put, event put + delete by revoke
	evs, notes := collect(wch, expect, 20*time.Second)
	emit("watch-events", rec{"events": eventRecs(evs), "notes": notes})
	cur := get("watch-current", "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	c, cancel = context.WithTimeout(wctx, 10*time.Second)
	err = cli.RequestProgress(c)
	cancel()
	if err != nil {
		emit("watch-progress", errRec(err))
	} else {
		deadline := time.NewTimer(10 * time.Second)
		got := rec{"timeout": true}
	wait:
		for {
			select {
			case wr, ok := <-wch:
				if !ok {
					got = rec{"closed": true}
					break wait
				}
				if wr.IsProgressNotify() {
					atCurrent := cur != nil && wr.Header.Revision == cur.Header.Revision
					got = rec{"progress": true, "revision": rel(wr.Header.Revision), "at_current": atCurrent}
					break wait
				}
				got = rec{"unexpected": eventRecs(wr.Events)}
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
		emit("watch-progress", got)
	}
	wcancel()

	// compaction, then reads and a watch below it
	cur = get("before-compact", "/kv/a")
	if cur != nil {
		compactAt := r0 + 5
		c, cancel = ctx()
		cr, err := cli.Compact(c, compactAt)
		cancel()
		if err != nil {
			emit("compact", errRec(err))
		} else {
			emit("compact", rec{"header": hdr(cr.Header)})
		}
		c, cancel = ctx()
		_, err = cli.Compact(c, compactAt)
		cancel()
		emit("compact-again", errRec(err))
		c, cancel = ctx()
		_, err = cli.Compact(c, cur.Header.Revision+1000)
		cancel()
		emit("compact-future", errRec(err))
		get("get-compacted", "/kv/a", clientv3.WithRev(r0+1))
		get("get-at-compacted", "/kv/a", clientv3.WithRev(compactAt))
		cwctx, cwcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
		cwch := cli.Watch(cwctx, "/kv/", clientv3.WithPrefix(), clientv3.WithRev(r0+1))
		evs, notes := collect(cwch, 1, 10*time.Second)
		compacted := false
		for _, n := range notes {
			if n["err"] == rpctypes.ErrCompacted.Error() {
				compacted = true
			}
		}
		emit("watch-compacted", rec{"events": eventRecs(evs), "notes": notes, "err_compacted": compacted})
		cwcancel()
	}

	more()

	// cluster and maintenance
	c, cancel = ctx()
	st, err := cli.Status(c, endpoint)
	cancel()
	if err != nil {
		emit("status", errRec(err))
	} else {
		emit("status", rec{"header": hdr(st.Header), "version_set": st.Version != "", "db_size_set": st.DbSize > 0,
			"leader_set": st.Leader != 0, "raft_index_set": st.RaftIndex > 0, "raft_term_set": st.RaftTerm > 0,
			"errors": st.Errors, "is_learner": st.IsLearner})
	}
	c, cancel = ctx()
	ml, err := cli.MemberList(c)
	cancel()
	if err != nil {
		emit("member-list", errRec(err))
	} else {
		names, selfFound, leaderFound := []string{}, false, false
		for _, m := range ml.Members {
			names = append(names, m.Name)
			if m.ID == ml.Header.MemberId {
				selfFound = true
			}
			if st != nil && m.ID == st.Leader {
				leaderFound = true
			}
			for _, u := range m.ClientURLs {
				if !strings.HasPrefix(u, "http://") {
					names = append(names, "bad client url "+u)
				}
			}
		}
		sort.Strings(names)
		emit("member-list", rec{"members": len(ml.Members), "names": names, "self_is_member": selfFound,
			"status_leader_is_member": leaderFound})
	}
	get("final", "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
}

// more: watchers sharing one stream, filters, cancel; periodic progress; lease expiry and the
// keep-alive stream; concurrency.Mutex and Election (lease + keep-alive, CREATE compares,
// sorted ranges with max_create_revision, delete watches); a nested txn; a 1 MiB value.
func more() {
	// two watchers on one stream (same ctx), one with a NOPUT filter, created-notify; then one
	// cancelled while the other goes on
	c, cancel := ctx()
	base, err := cli.Get(c, "/m/")
	cancel()
	if !must("multi-watch", err) {
		return
	}
	from := base.Header.Revision + 1
	sctx, scancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	actx, acancel := context.WithCancel(sctx)
	wa := cli.Watch(actx, "/m/a", clientv3.WithRev(from), clientv3.WithCreatedNotify())
	wb := cli.Watch(sctx, "/m/", clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithFilterPut(), clientv3.WithPrevKV())
	created := rec{}
	select {
	case wr := <-wa:
		created = rec{"created": wr.Created, "events": len(wr.Events), "header": hdr(&wr.Header)}
	case <-time.After(10 * time.Second):
		created = rec{"timeout": true}
	}
	emit("multi-watch-created", created)
	put("multi-put-a", "/m/a", "1")
	put("multi-put-b", "/m/b", "2")
	c, cancel = ctx()
	_, err = cli.Delete(c, "/m/b")
	cancel()
	emit("multi-delete-b", errRec(err))
	evA, nA := collect(wa, 1, 10*time.Second)
	evB, nB := collect(wb, 1, 10*time.Second)
	emit("multi-watch-events", rec{"a": eventRecs(evA), "a_notes": nA, "b_noput": eventRecs(evB), "b_notes": nB})
	acancel()
	put("multi-put-a-after-cancel", "/m/a", "2")
	c, cancel = ctx()
	_, err = cli.Delete(c, "/m/a")
	cancel()
	emit("multi-delete-a", errRec(err))
	evB, nB = collect(wb, 1, 10*time.Second)
	emit("multi-watch-after-cancel", rec{"b_noput": eventRecs(evB), "b_notes": nB})
	scancel()

	// periodic progress notify on an idle watch (etcd and keel both run with a 1 s interval)
	pctx, pcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	pw := cli.Watch(pctx, "/idle/", clientv3.WithPrefix(), clientv3.WithProgressNotify())
	c, cancel = ctx()
	cur, err := cli.Get(c, "/idle/")
	cancel()
	got := rec{"timeout": true}
	deadline := time.After(20 * time.Second)
wait:
	for {
		select {
		case wr, ok := <-pw:
			if !ok {
				got = rec{"closed": true}
				break wait
			}
			if wr.IsProgressNotify() {
				got = rec{"progress": true, "at_current": err == nil && wr.Header.Revision == cur.Header.Revision}
				break wait
			}
		case <-deadline:
			break wait
		}
	}
	pcancel()
	emit("watch-periodic-progress", got)

	// a lease left to expire: its key's DELETE arrives on a watch
	c, cancel = ctx()
	l, err := cli.Grant(c, 2)
	cancel()
	granted := time.Now() // the lease expires no earlier than about TTL after this
	if must("expiry-grant", err) {
		emit("expiry-grant", rec{"ttl": l.TTL})
		put("expiry-put", "/exp/k", "v", clientv3.WithLease(l.ID))
		ectx, ecancel := context.WithCancel(context.Background())
		c, cancel = ctx()
		g, err := cli.Get(c, "/exp/k")
		cancel()
		if must("expiry-watch", err) {
			ew := cli.Watch(ectx, "/exp/k", clientv3.WithRev(g.Header.Revision+1), clientv3.WithPrevKV())
			evs, notes := collect(ew, 1, 30*time.Second)
			emit("expiry-delete-event", rec{"events": eventRecs(evs), "notes": notes,
				"not_before_ttl": time.Since(granted) >= time.Second})
		}
		ecancel()
	}

	// the keep-alive stream: renewals every TTL/3
	c, cancel = ctx()
	l, err = cli.Grant(c, 3)
	cancel()
	if must("keepalive-stream-grant", err) {
		kctx, kcancel := context.WithCancel(context.Background())
		ka, err := cli.KeepAlive(kctx, l.ID)
		if must("keepalive-stream", err) {
			n, ttls := 0, map[int64]bool{}
			t := time.After(15 * time.Second)
		loop:
			for n < 3 {
				select {
				case r, ok := <-ka:
					if !ok {
						break loop
					}
					n++
					ttls[r.TTL] = true
				case <-t:
					break loop
				}
			}
			emit("keepalive-stream", rec{"responses_at_least_3": n >= 3, "ttl_3_only": len(ttls) == 1 && ttls[3]})
		}
		kcancel()
		c, cancel = ctx()
		_, err = cli.Revoke(c, l.ID)
		cancel()
		emit("keepalive-stream-revoke", errRec(err))
	}

	// concurrency: two sessions contend for a Mutex; an Election
	s1, err1 := concurrency.NewSession(cli, concurrency.WithTTL(10))
	s2, err2 := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if must("session", err1) && must("session", err2) {
		m1, m2 := concurrency.NewMutex(s1, "/lock/x"), concurrency.NewMutex(s2, "/lock/x")
		c, cancel = ctx()
		err = m1.Lock(c)
		cancel()
		emit("mutex-lock-1", errRec(err))
		order := make(chan string, 4)
		go func() {
			c, cancel := ctx()
			defer cancel()
			if err := m2.Lock(c); err != nil {
				order <- "lock-2 failed: " + rpctypes.ErrorDesc(err)
				return
			}
			order <- "locked-2"
			_ = m2.Unlock(c)
		}()
		select {
		case o := <-order:
			order <- "early " + o
		case <-time.After(500 * time.Millisecond):
		}
		order <- "unlock-1"
		c, cancel = ctx()
		err = m1.Unlock(c)
		cancel()
		var seq []string
		for len(seq) < 2 {
			select {
			case o := <-order:
				seq = append(seq, o)
			case <-time.After(15 * time.Second):
				seq = append(seq, "timeout")
			}
		}
		emit("mutex-order", rec{"unlock_err": errRec(err)["err"], "order": seq})

		e1, e2 := concurrency.NewElection(s1, "/elect/e"), concurrency.NewElection(s2, "/elect/e")
		c, cancel = ctx()
		err = e1.Campaign(c, "one")
		cancel()
		emit("election-campaign-1", errRec(err))
		won := make(chan error, 1)
		go func() {
			c, cancel := ctx()
			defer cancel()
			won <- e2.Campaign(c, "two")
		}()
		c, cancel = ctx()
		ld, err := e1.Leader(c)
		cancel()
		if err == nil && len(ld.Kvs) > 0 {
			emit("election-leader", rec{"value": string(ld.Kvs[0].Value)})
		} else {
			emit("election-leader", errRec(err))
		}
		c, cancel = ctx()
		err = e1.Resign(c)
		cancel()
		emit("election-resign-1", errRec(err))
		select {
		case err := <-won:
			emit("election-campaign-2", errRec(err))
		case <-time.After(15 * time.Second):
			emit("election-campaign-2", rec{"timeout": true})
		}
		c, cancel = ctx()
		ld, err = e2.Leader(c)
		cancel()
		if err == nil && len(ld.Kvs) > 0 {
			emit("election-leader-2", rec{"value": string(ld.Kvs[0].Value)})
		} else {
			emit("election-leader-2", errRec(err))
		}
		s1.Close()
		s2.Close()
	}

	// a nested txn, and a 1 MiB value (many DATA frames each way)
	txn("txn-nested", nil, []clientv3.Op{clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Version("/kv/a"), ">", 0)},
		[]clientv3.Op{clientv3.OpPut("/kv/nested", "n")}, nil)}, nil)
	big := strings.Repeat("0123456789abcdef", 1<<16)
	put("put-1mib", "/kv/big", big)
	c, cancel = ctx()
	g, err := cli.Get(c, "/kv/big")
	cancel()
	if err != nil {
		emit("get-1mib", errRec(err))
	} else {
		emit("get-1mib", rec{"same": len(g.Kvs) == 1 && string(g.Kvs[0].Value) == big})
	}
	put("put-1.6mib", "/kv/big2", big+big[:600*1024]) // over etcd's 1.5 MiB, under clientv3's 2 MiB
}

// compare: the same steps in both files, field by field; prints each difference.
func compare(a, b string) int {
	read := func(p string) ([]string, map[string]interface{}) {
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		order, m := []string{}, map[string]interface{}{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if line == "" {
				continue
			}
			var r map[string]interface{}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				fmt.Fprintf(os.Stderr, "%s: bad line %q\n", p, line)
				os.Exit(2)
			}
			s, _ := r["step"].(string)
			if _, dup := m[s]; !dup {
				order = append(order, s)
			}
			m[s] = r
		}
		return order, m
	}
	order, ma := read(a)
	_, mb := read(b)
	passed, failed := 0, 0
	for _, s := range order {
		var diffs []string
		diff("", ma[s], mb[s], &diffs)
		if len(diffs) == 0 {
			passed++
			continue
		}
		failed++
		fmt.Printf("=== DIFFERENT %s\n", s)
		for _, d := range diffs {
			fmt.Printf("    %s\n", d)
		}
	}
	fmt.Printf("compat clientv3: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func diff(path string, a, b interface{}, out *[]string) {
	if reflect.DeepEqual(a, b) {
		return
	}
	am, aok := a.(map[string]interface{})
	bm, bok := b.(map[string]interface{})
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		var ks []string
		for k := range keys {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			diff(path+"."+k, am[k], bm[k], out)
		}
		return
	}
	al, aok := a.([]interface{})
	bl, bok := b.([]interface{})
	if aok && bok && len(al) == len(bl) {
		for i := range al {
			diff(fmt.Sprintf("%s[%d]", path, i), al[i], bl[i], out)
		}
		return
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	*out = append(*out, fmt.Sprintf("%s: etcd %s, gateway %s", path, ja, jb))
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "run" {
		run(os.Args[2])
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "compare" {
		os.Exit(compare(os.Args[2], os.Args[3]))
	}
	fmt.Fprintln(os.Stderr, "usage: conformance run ENDPOINT | conformance compare A.jsonl B.jsonl")
	os.Exit(2)
}
