// The lease workloads, as keel-bench's (see bench/keel_bench.c's header):
//
// lease-keepalive: grants --leases leases (--lease-ttl, default 600 s; --lease-window grants in
// flight), then --clients goroutines send keep-alives round-robin over them, each keeping one
// in flight (unpaced unless --rate), for --total or --duration, then revokes the leases (not
// timed). Each goroutine owns one raw LeaseKeepAlive gRPC stream (etcdserverpb.Lease, on its
// client's connection) and sends one LeaseKeepAliveRequest and waits for its answer, again and
// again: a request and its answer per keep-alive, like keel's LeaseKeepAlive frames. (etcd's own
// `benchmark lease-keepalive` calls clientv3's KeepAliveOnce instead, which opens and closes a
// whole stream per keep-alive; clientv3's KeepAlive sends one per TTL/3 only.) An answer with
// TTL <= 0 counts as a LEASE_NOT_FOUND error. There is no per-request deadline on the stream:
// a stream that fails is counted as an error and opened again.
//
// lease-churn: a watch on a prefix of the run's own (WithPrefix, WithCreatedNotify, on the
// first client), then --leases grants with --lease-ttl (default 2 s, etcd's minimum with a
// 1000 ms election timeout), each followed at once by a put of its key with the lease; then it
// waits until every attached key's DELETE event has arrived, or --lease-timeout s past the last
// due time. Lag = DELETE arrival - (grant acknowledged + granted TTL), on this process's
// monotonic clock. Meanwhile one more clientv3 client puts to one key in a closed loop; its
// largest gap between completions while waiting is the max write stall. Leases left are
// revoked.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

const (
	leaseTTLKeepalive = 600 // s: outlives any run
	leaseTTLChurn     = 2   // s: etcd's minimum TTL with a 1000 ms election timeout
)

func (c *config) leasing() bool {
	return c.workload == "lease-keepalive" || c.workload == "lease-churn"
}

// monoNs: this process's monotonic clock in nanoseconds.
func monoNs() int64 { return int64(time.Since(procStart)) }

type leaseRec struct {
	id       int64
	ttl      int64
	ackNs    int64
	attached bool
	delNs    int64 // atomic: its key's DELETE event arrived
}

// errTally counts errors by name from many goroutines.
type errTally struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (t *errTally) add(name string) {
	t.mu.Lock()
	t.m[name]++
	t.mu.Unlock()
}

func leaseErrName(err error) string {
	if err == rpctypes.ErrLeaseNotFound {
		return "LEASE_NOT_FOUND"
	}
	return errName(err)
}

// gapTracker: the largest gap between consecutive completions within a window, as
// bench/stats.c's keel_gap.
type gapTracker struct {
	mu     sync.Mutex
	last   int64
	max    int64
	isOpen bool
}

func (g *gapTracker) count(now int64) {
	if now > g.last && now-g.last > g.max {
		g.max = now - g.last
	}
}

// mark records a completion; true when it falls in the window.
func (g *gapTracker) mark(now int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	in := g.isOpen
	if in {
		g.count(now)
	}
	if now > g.last {
		g.last = now
	}
	return in
}

func (g *gapTracker) open(now int64) {
	g.mu.Lock()
	g.isOpen = true
	if now > g.last {
		g.last = now
	}
	g.mu.Unlock()
}

func (g *gapTracker) close(now int64) {
	g.mu.Lock()
	if g.isOpen {
		g.count(now)
	}
	g.isOpen = false
	g.mu.Unlock()
}

func leaseKey(prefix string, idx uint64) string { return fmt.Sprintf("%s%08x", prefix, idx) }

// leaseKeyIndex: the index of a key made by leaseKey, or -1.
func leaseKeyIndex(key []byte, prefix string) int64 {
	if len(key) < len(prefix)+8 || len(key) > len(prefix)+16 || string(key[:len(prefix)]) != prefix {
		return -1
	}
	var v uint64
	for _, c := range key[len(prefix):] {
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			return -1
		}
		v = v<<4 | d
	}
	if v > 1<<63-1 {
		return -1
	}
	return int64(v)
}

type leaseRun struct {
	cfg     *config
	clis    []*clientv3.Client
	timeout time.Duration
	val     string
	recs    []leaseRec
	errs    *errTally
	prefix  string

	grantSamples []float64
	grantS       float64
	granted      uint64
	grantedTTL   int64
	attachedN    uint64
	revoked      uint64
	revokeGone   uint64
	revokeErrors uint64
}

// pipeline runs fn(i) for i in [0, n) with at most window calls at a time.
func pipeline(n uint64, window int, fn func(i uint64)) {
	var next uint64
	var wg sync.WaitGroup
	for w := 0; w < window && uint64(w) < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := atomic.AddUint64(&next, 1) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// grant grants every lease (lease-churn: and attaches its key) with --lease-window in flight.
func (lr *leaseRun) grant(attach bool) {
	cfg := lr.cfg
	if uint64(len(lr.recs)) != cfg.leases {
		lr.recs = make([]leaseRec, cfg.leases)
	}
	samples := make([]float64, cfg.leases)
	ok := make([]bool, cfg.leases)
	start := time.Now()
	pipeline(cfg.leases, cfg.leaseWindow, func(i uint64) {
		cli := lr.clis[i%uint64(len(lr.clis))]
		r := &lr.recs[i]
		ctx, cancel := context.WithTimeout(context.Background(), lr.timeout)
		defer cancel()
		t0 := monoNs()
		resp, err := cli.Grant(ctx, cfg.leaseTTL)
		now := monoNs()
		if err == nil && resp.Error != "" {
			err = fmt.Errorf("%s", resp.Error)
		}
		if err != nil || resp.ID == 0 {
			lr.errs.add(leaseErrName(err))
			return
		}
		r.id, r.ttl, r.ackNs = int64(resp.ID), resp.TTL, now
		samples[i], ok[i] = float64(now-t0)/1e9, true
		if !attach {
			return
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), lr.timeout)
		defer cancel2()
		if _, err := cli.Put(ctx2, leaseKey(lr.prefix, i), lr.val, clientv3.WithLease(resp.ID)); err != nil {
			lr.errs.add(leaseErrName(err)) // LEASE_NOT_FOUND: gone before its key was put
			return
		}
		r.attached = true
	})
	lr.grantS = time.Since(start).Seconds()
	for i := range lr.recs {
		if ok[i] {
			lr.grantSamples = append(lr.grantSamples, samples[i])
			lr.granted++
			if lr.grantedTTL == 0 {
				lr.grantedTTL = lr.recs[i].ttl
			}
		}
		if lr.recs[i].attached {
			lr.attachedN++
		}
	}
}

// revoke revokes, best effort, every lease granted whose key was not seen expiring.
func (lr *leaseRun) revoke() {
	var revoked, gone, failed uint64
	pipeline(uint64(len(lr.recs)), lr.cfg.leaseWindow, func(i uint64) {
		r := &lr.recs[i]
		if r.id == 0 || atomic.LoadInt64(&r.delNs) != 0 {
			return
		}
		cli := lr.clis[i%uint64(len(lr.clis))]
		ctx, cancel := context.WithTimeout(context.Background(), lr.timeout)
		defer cancel()
		_, err := cli.Revoke(ctx, clientv3.LeaseID(r.id))
		switch {
		case err == nil:
			atomic.AddUint64(&revoked, 1)
		case err == rpctypes.ErrLeaseNotFound:
			atomic.AddUint64(&gone, 1)
		default:
			atomic.AddUint64(&failed, 1)
		}
	})
	lr.revoked, lr.revokeGone, lr.revokeErrors = revoked, gone, failed
}

func (lr *leaseRun) jsonLease() *jsonLease {
	g, _ := summarize(append([]float64(nil), lr.grantSamples...), lr.grantS)
	return &jsonLease{Leases: lr.cfg.leases, TTLS: lr.cfg.leaseTTL, GrantedTTLS: lr.grantedTTL,
		Granted: lr.granted, GrantS: lr.grantS, Grant: g, Revoked: lr.revoked,
		RevokeGone: lr.revokeGone, RevokeErrors: lr.revokeErrors}
}

func (lr *leaseRun) printLeaseText() {
	_, gp := summarize(append([]float64(nil), lr.grantSamples...), lr.grantS)
	fmt.Printf("\nLeases: %d of %d granted (TTL %d s asked, %d s granted) in %.4f secs., grant p50 %.4f p99 %.4f secs.; revoked at the end: %d (%d already gone, %d failed)\n",
		lr.granted, lr.cfg.leases, lr.cfg.leaseTTL, lr.grantedTTL, lr.grantS, gp[2], gp[6],
		lr.revoked, lr.revokeGone, lr.revokeErrors)
}

func runLease(cfg *config, clis []*clientv3.Client, connEps [][]string, source string, timeout time.Duration, val string) {
	lr := &leaseRun{cfg: cfg, clis: clis, timeout: timeout, val: val,
		errs: &errTally{m: map[string]uint64{}}}
	if cfg.workload == "lease-keepalive" {
		lr.keepalive()
	} else {
		lr.churn(connEps[0], source)
	}
}

// keepalive: the lease-keepalive workload.
func (lr *leaseRun) keepalive() {
	cfg := lr.cfg
	lr.grant(false)
	var ids []int64
	for _, r := range lr.recs {
		if r.id != 0 {
			ids = append(ids, r.id)
		}
	}
	// Warm-up, not timed: every lease kept alive once, so the run measures keep-alives of
	// leases already renewed (keel commits a lease's first renewal after its grant).
	pipeline(uint64(len(ids)), cfg.leaseWindow, func(i uint64) {
		ctx, cancel := context.WithTimeout(context.Background(), lr.timeout)
		defer cancel()
		if _, err := lr.clis[i%uint64(len(lr.clis))].KeepAliveOnce(ctx, clientv3.LeaseID(ids[i])); err != nil {
			lr.errs.add(leaseErrName(err))
		}
	})
	var issued, kaNext uint64
	results := make([][]float64, cfg.clients)
	var tokens chan struct{}
	stopPacer := make(chan struct{})
	if cfg.rate > 0 {
		tokens = make(chan struct{}, int(cfg.rate/100)+1)
		go pacer(cfg.rate, tokens, stopPacer)
	}
	start := time.Now()
	deadline := start.Add(time.Duration(cfg.duration * float64(time.Second)))
	finished := func() bool {
		if cfg.duration > 0 {
			return !time.Now().Before(deadline)
		}
		return atomic.AddUint64(&issued, 1) > cfg.total
	}
	var wg sync.WaitGroup
	if len(ids) == 0 {
		fmt.Fprintf(os.Stderr, "etcd-driver: no lease was granted\n")
	} else {
		for c := 0; c < cfg.clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				lc := pb.NewLeaseClient(lr.clis[c%len(lr.clis)].ActiveConnection())
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var stream pb.Lease_LeaseKeepAliveClient
				for !finished() {
					if tokens != nil && !waitToken(tokens, cfg.duration > 0, deadline) {
						break
					}
					if stream == nil {
						var err error
						if stream, err = lc.LeaseKeepAlive(ctx); err != nil {
							lr.errs.add(errName(err))
							stream = nil
							time.Sleep(10 * time.Millisecond)
							continue
						}
					}
					id := ids[(atomic.AddUint64(&kaNext, 1)-1)%uint64(len(ids))]
					t0 := time.Now()
					err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id})
					var resp *pb.LeaseKeepAliveResponse
					if err == nil {
						resp, err = stream.Recv()
					}
					lat := time.Since(t0).Seconds()
					if err != nil {
						lr.errs.add(errName(err))
						stream = nil // a failed stream stays failed: open another
						continue
					}
					if resp.TTL <= 0 {
						lr.errs.add("LEASE_NOT_FOUND")
						continue
					}
					results[c] = append(results[c], lat)
				}
				if stream != nil {
					stream.CloseSend()
				}
			}(c)
		}
	}
	wg.Wait()
	close(stopPacer)
	totalS := time.Since(start).Seconds()
	lr.revoke()
	for _, cli := range lr.clis {
		cli.Close()
	}
	var all []float64
	for _, r := range results {
		all = append(all, r...)
	}
	lr.report(all, totalS, nil)
	if len(all) == 0 {
		os.Exit(1)
	}
}

// churn: the lease-churn workload.
func (lr *leaseRun) churn(eps []string, source string) {
	cfg := lr.cfg
	lr.prefix = fmt.Sprintf("kbench-lease/%x/", uint64(time.Now().UnixNano())^cfg.seed)
	// Made before the watch starts: its goroutine marks the DELETEs in them.
	lr.recs = make([]leaseRec, cfg.leases)
	wctx, wcancel := context.WithCancel(context.Background())
	wch := lr.clis[0].Watch(wctx, lr.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	created := make(chan error, 1)
	var waiting int32        // atomic: the attaching is over
	var attachedTotal uint64 // set before waiting
	var expired uint64       // atomic
	var lastDel int64        // atomic
	var stopped int32        // atomic: later events are the revokes'
	done := make(chan struct{})
	var doneOnce sync.Once
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		isCreated := false
		for resp := range wch {
			if err := resp.Err(); err != nil {
				if !isCreated {
					isCreated = true
					created <- err
				} else if atomic.LoadInt32(&stopped) == 0 {
					fmt.Fprintf(os.Stderr, "etcd-driver: the watch ended: %v\n", err)
					doneOnce.Do(func() { close(done) })
				}
				continue
			}
			if resp.Created && !isCreated {
				isCreated = true
				created <- nil
			}
			if atomic.LoadInt32(&stopped) != 0 {
				continue
			}
			now := monoNs()
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				idx := leaseKeyIndex(ev.Kv.Key, lr.prefix)
				if idx < 0 || uint64(idx) >= cfg.leases {
					continue
				}
				if atomic.CompareAndSwapInt64(&lr.recs[idx].delNs, 0, now) {
					atomic.AddUint64(&expired, 1)
					atomic.StoreInt64(&lastDel, now)
				}
			}
			if atomic.LoadInt32(&waiting) != 0 && atomic.LoadUint64(&expired) >= atomic.LoadUint64(&attachedTotal) {
				doneOnce.Do(func() { close(done) })
			}
		}
		if !isCreated {
			created <- fmt.Errorf("the watch closed before it was created")
		}
	}()
	t := time.NewTimer(lr.timeout)
	select {
	case err := <-created:
		t.Stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: watch: %v\n", err)
			os.Exit(1)
		}
	case <-t.C:
		fmt.Fprintf(os.Stderr, "etcd-driver: the watch was not created within %v\n", lr.timeout)
		os.Exit(1)
	}

	// The stall writer, on a client of its own.
	var gap gapTracker
	var stallSamples []float64
	var stallPuts, stallErrors uint64
	var stallStop int32
	var swg sync.WaitGroup
	var stallCli *clientv3.Client
	if cfg.stallWriter {
		var err error
		if stallCli, err = newClient(eps, source); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
			os.Exit(1)
		}
		swg.Add(1)
		go func() {
			defer swg.Done()
			key := lr.prefix + "stall"
			for atomic.LoadInt32(&stallStop) == 0 {
				ctx, cancel := context.WithTimeout(context.Background(), lr.timeout)
				t0 := monoNs()
				_, err := stallCli.Put(ctx, key, lr.val)
				cancel()
				now := monoNs()
				if err != nil {
					gap.mu.Lock()
					in := gap.isOpen
					gap.mu.Unlock()
					if in {
						stallErrors++
					}
					continue
				}
				if gap.mark(now) {
					stallPuts++
					stallSamples = append(stallSamples, float64(now-t0)/1e9)
				}
			}
		}()
	}

	lr.grant(true)
	now := monoNs()
	start := time.Now()
	gap.open(now)
	var firstDue, lastDue int64
	for i := range lr.recs {
		r := &lr.recs[i]
		if !r.attached {
			continue
		}
		due := r.ackNs + r.ttl*int64(time.Second)
		if firstDue == 0 || due < firstDue {
			firstDue = due
		}
		if due > lastDue {
			lastDue = due
		}
	}
	atomic.StoreUint64(&attachedTotal, lr.attachedN)
	atomic.StoreInt32(&waiting, 1)
	if lr.attachedN == 0 {
		fmt.Fprintf(os.Stderr, "etcd-driver: no key was attached to a lease\n")
		doneOnce.Do(func() { close(done) })
	} else if atomic.LoadUint64(&expired) >= lr.attachedN {
		doneOnce.Do(func() { close(done) })
	} else if !cfg.json {
		fmt.Fprintf(os.Stderr, "etcd-driver: %d of %d leases granted (TTL %d s), %d keys attached; waiting for them to expire\n",
			lr.granted, cfg.leases, lr.grantedTTL, lr.attachedN)
	}
	wait := time.Duration(lastDue-now) + time.Duration(cfg.leaseTimeout*float64(time.Second))
	if wait < 0 {
		wait = 0
	}
	tw := time.NewTimer(wait)
	select {
	case <-done:
	case <-tw.C:
		fmt.Fprintf(os.Stderr, "etcd-driver: %d of %d keys expired within %g s of the last due time\n",
			atomic.LoadUint64(&expired), lr.attachedN, cfg.leaseTimeout)
	}
	tw.Stop()
	end := monoNs()
	waitS := time.Since(start).Seconds()
	gap.close(end)
	atomic.StoreInt32(&stallStop, 1)
	atomic.StoreInt32(&stopped, 1)
	swg.Wait()
	if stallCli != nil {
		stallCli.Close()
	}
	var lags []float64
	for i := range lr.recs {
		r := &lr.recs[i]
		if d := atomic.LoadInt64(&r.delNs); r.attached && d != 0 {
			lags = append(lags, float64(d-r.ackNs)/1e9-float64(r.ttl))
		}
	}
	nExpired := atomic.LoadUint64(&expired)
	span := waitS
	if ld := atomic.LoadInt64(&lastDel); nExpired > 0 && ld > firstDue {
		span = float64(ld-firstDue) / 1e9
	}
	lr.revoke()
	wcancel()
	for _, cli := range lr.clis {
		cli.Close()
	}
	wwg.Wait()

	jl := lr.jsonLease()
	jl.Attached = &lr.attachedN
	jl.Expired = &nExpired
	complete := lr.attachedN > 0 && nExpired >= lr.attachedN
	jl.Complete = &complete
	jl.TimeoutS = &cfg.leaseTimeout
	jl.WaitS = &waitS
	jl.ExpirySpanS = &span
	if len(lags) > 0 {
		sorted := append([]float64(nil), lags...)
		sort.Float64s(sorted)
		m := sorted[len(sorted)-1] * 1e3
		jl.MaxLagMs = &m
	}
	st, _ := summarize(append([]float64(nil), stallSamples...), waitS)
	jl.Stall = &jsonStall{Enabled: cfg.stallWriter, Puts: stallPuts, Errors: stallErrors,
		MaxGapMs: float64(gap.max) / 1e6, Latency: st}
	lr.reportChurn(lags, span, jl, waitS)
	if len(lags) == 0 {
		os.Exit(1)
	}
}

func (lr *leaseRun) report(samples []float64, totalS float64, jl *jsonLease) {
	cfg := lr.cfg
	sum, p := summarize(samples, totalS)
	if jl == nil {
		jl = lr.jsonLease()
	}
	if !cfg.json {
		printText(os.Stdout, samples, sum, p, lr.errs.m)
		lr.printLeaseText()
		return
	}
	writeJSON(cfg, sum, lr.errs.m, nil, totalS, nil, jl)
}

func (lr *leaseRun) reportChurn(lags []float64, span float64, jl *jsonLease, waitS float64) {
	cfg := lr.cfg
	sum, p := summarize(lags, span)
	if cfg.json {
		writeJSON(cfg, sum, lr.errs.m, nil, span, nil, jl)
		return
	}
	fmt.Printf("\nExpiry lag: (DELETE event) - (grant acknowledged + TTL), of each lease expired; Requests/sec: expiries per second from the first due time to the last DELETE\n")
	printText(os.Stdout, lags, sum, p, lr.errs.m)
	lr.printLeaseText()
	status := "timed out"
	if *jl.Complete {
		status = "all"
	}
	maxLag := 0.0
	if jl.MaxLagMs != nil {
		maxLag = *jl.MaxLagMs / 1e3
	}
	fmt.Printf("Expiry: %d of %d attached keys deleted by expiry within %.4f secs. (%s); lag p50 %.4f p99 %.4f max %.4f secs.; spread over %.4f secs.\n",
		*jl.Expired, *jl.Attached, waitS, status, p[2], p[6], maxLag, span)
	if cfg.stallWriter {
		s := jl.Stall
		fmt.Printf("Write stall: %d puts (%d failed) by one writer while waiting, p50 %.4f p99 %.4f secs.; largest gap between two completions %.4f secs.\n",
			s.Puts, s.Errors, s.Latency.P50Ms/1e3, s.Latency.P99Ms/1e3, s.MaxGapMs/1e3)
	}
}

// jsonLease: the lease workloads' "lease" object, field for field keel-bench's; the pointers
// are lease-churn's only.
type jsonLease struct {
	Leases       uint64     `json:"leases"`
	TTLS         int64      `json:"ttl_s"`
	GrantedTTLS  int64      `json:"granted_ttl_s"`
	Granted      uint64     `json:"granted"`
	GrantS       float64    `json:"grant_s"`
	Grant        summary    `json:"grant"`
	Revoked      uint64     `json:"revoked"`
	RevokeGone   uint64     `json:"revoke_gone"`
	RevokeErrors uint64     `json:"revoke_errors"`
	Attached     *uint64    `json:"attached,omitempty"`
	Expired      *uint64    `json:"expired,omitempty"`
	Complete     *bool      `json:"complete,omitempty"`
	TimeoutS     *float64   `json:"timeout_s,omitempty"`
	WaitS        *float64   `json:"wait_s,omitempty"`
	ExpirySpanS  *float64   `json:"expiry_span_s,omitempty"`
	MaxLagMs     *float64   `json:"max_lag_ms,omitempty"`
	Stall        *jsonStall `json:"stall,omitempty"`
}

type jsonStall struct {
	Enabled  bool    `json:"enabled"`
	Puts     uint64  `json:"puts"`
	Errors   uint64  `json:"errors"`
	MaxGapMs float64 `json:"max_gap_ms"`
	Latency  summary `json:"latency"`
}
