// etcd-driver: the keel-bench workloads against etcd's gRPC API, for bench/compare-etcd.sh.
//
//	etcd-driver [flags] put | range | txn-put | txn-mixed | mixed | watch | watch-latency
//	                    | lease-keepalive | lease-churn
//
// It takes keel-bench's flags and prints keel-bench's report (text, or one JSON object with
// --json) so that the two can be compared line by line. --conns N opens N clientv3 clients
// (N gRPC client connections); --clients C goroutines each keep one request in flight (closed
// loop, unless --rate paces them), goroutine c using client c % N. Every latency sample is
// kept, so percentiles are exact (nearest rank, as bench/stats.c).
//
// watch: --watchers W clientv3 watches over the whole key space ("\x00" and up: WithFromKey),
// spread over the --conns clients (watcher i on client i % N, sharing its gRPC watch stream),
// each created (WithCreatedNotify, waited for) before the --clients writers put --total keys
// (at --rate); reports events delivered per second. The run ends when every watcher has seen
// every acknowledged put (or 30 s after the writers finish). watch-latency: the same, the
// first 8 bytes of each value carrying its put's send time (host-endian uint64 nanoseconds of
// this process's monotonic clock, as Go's time.Since measures it); reports put -> event
// latency percentiles. Both as keel-bench's. lease-keepalive and lease-churn: see lease.go.
//
// Routing follows keel's client by default (--target auto): writes and linearizable reads go
// to the leader, serializable reads to the member of --zone when one is given (else to the
// leader too). --target spread pins client i to endpoint i % len(endpoints) instead, as
// etcd's own benchmark tool does without --target-leader.
//
// Built in GOPATH mode against Debian's golang-etcd-server-dev (etcd 3.4 clientv3):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$PWD/build/etcd-driver go build -o ... ./bench/etcd-driver
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/balancer/resolver/endpoint"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/pkg/logutil"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// gitRevision is set by the build (-ldflags "-X main.gitRevision=...").
var gitRevision = "unknown"

var workloadNames = []string{"put", "range", "txn-put", "txn-mixed", "mixed", "watch", "watch-latency",
	"lease-keepalive", "lease-churn"}

type config struct {
	workload     string
	endpoints    string
	conns        int
	clients      int
	total        uint64
	duration     float64
	rate         float64
	keySize      int
	valSize      int
	keySpace     uint64
	sequential   bool
	zone         string
	consistency  string
	readRatio    float64
	seed         uint64
	json         bool
	timeoutMs    int
	target       string
	timeline     string
	serializable bool
	watchers     int
	leases       uint64
	leaseTTL     int64
	leaseWindow  int
	leaseTimeout float64
	stallWriter  bool
}

func (c *config) watching() bool { return c.workload == "watch" || c.workload == "watch-latency" }

const usageText = `usage: etcd-driver [flags] put|range|txn-put|txn-mixed|mixed|watch|watch-latency|
                           lease-keepalive|lease-churn
  --endpoints LIST      client addresses (default $ETCD_ENDPOINTS or 127.0.0.1:2379)
  --conns N             clientv3 clients, one gRPC connection each (default 1)
  --clients N           requests kept in flight (default 1)
  --total N             requests in all (default 10000)
  --duration S          run for S seconds instead of --total
  --rate R              requests per second over all clients (default unlimited)
  --key-size B          (default 8)   --val-size B (default 256)
  --key-space-size N    distinct keys (default 1)   --sequential-keys
  --consistency l|s     for reads (default l)   --read-ratio F (mixed; default 0.5)
  --zone Z              live in zone Z: source address 127.0.Z.250, same-zone serializable reads
  --target auto|spread|all  auto: to the leader (serializable reads: to --zone's member);
                        spread: client i to endpoint i % len(endpoints); all: every
                        connection to every endpoint (failover) (default auto)
  --timeline FILE       a line per answer: client, sent and answered (wall clock,
                        microseconds since the epoch), ok (0|1)
  --watchers W          watch workloads: watchers over the key space (default 100)
  --leases N            lease workloads: leases granted (default 10000)
  --lease-ttl S         their TTL in seconds (default 600 for lease-keepalive, 2 for
                        lease-churn; the server clamps it up to its minimum)
  --lease-window N      grants, attaching puts and revokes in flight (default 256)
  --lease-timeout S     lease-churn: wait at most S s past the last due time (default 30)
  --no-stall-writer     lease-churn: without the concurrent writer
  --seed N  --timeout-ms N  --json
`

func parseArgs(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("etcd-driver", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defEndpoints := os.Getenv("ETCD_ENDPOINTS")
	if defEndpoints == "" {
		defEndpoints = "127.0.0.1:2379"
	}
	fs.StringVar(&c.endpoints, "endpoints", defEndpoints, "")
	fs.IntVar(&c.conns, "conns", 1, "")
	fs.IntVar(&c.clients, "clients", 1, "")
	fs.Uint64Var(&c.total, "total", 10000, "")
	fs.Float64Var(&c.duration, "duration", 0, "")
	fs.Float64Var(&c.rate, "rate", 0, "")
	fs.IntVar(&c.keySize, "key-size", 8, "")
	fs.IntVar(&c.valSize, "val-size", 256, "")
	fs.Uint64Var(&c.keySpace, "key-space-size", 1, "")
	fs.BoolVar(&c.sequential, "sequential-keys", false, "")
	fs.StringVar(&c.zone, "zone", "", "")
	fs.StringVar(&c.consistency, "consistency", "l", "")
	fs.Float64Var(&c.readRatio, "read-ratio", 0.5, "")
	fs.Uint64Var(&c.seed, "seed", 1, "")
	fs.BoolVar(&c.json, "json", false, "")
	fs.IntVar(&c.timeoutMs, "timeout-ms", 10000, "")
	fs.StringVar(&c.target, "target", "auto", "")
	fs.StringVar(&c.timeline, "timeline", "", "")
	fs.IntVar(&c.watchers, "watchers", 100, "")
	fs.Uint64Var(&c.leases, "leases", 10000, "")
	fs.Int64Var(&c.leaseTTL, "lease-ttl", 0, "")
	fs.IntVar(&c.leaseWindow, "lease-window", 256, "")
	fs.Float64Var(&c.leaseTimeout, "lease-timeout", 30, "")
	noStall := fs.Bool("no-stall-writer", false, "")
	ttlSet := false
	help := fs.Bool("help", false, "")

	// Flags may come before or after the workload, as with getopt_long.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if *help {
			fmt.Print(usageText)
			os.Exit(0)
		}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "lease-ttl" {
				ttlSet = true
			}
		})
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if len(positional) != 1 {
		return nil, errors.New("exactly one workload expected")
	}
	c.workload = positional[0]
	found := false
	for _, w := range workloadNames {
		if w == c.workload {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("unknown workload '%s'", c.workload)
	}
	if c.consistency != "l" && c.consistency != "s" {
		return nil, errors.New("--consistency must be l or s")
	}
	c.serializable = c.consistency == "s"
	if c.target != "auto" && c.target != "spread" && c.target != "all" {
		return nil, errors.New("--target must be auto, spread or all")
	}
	if c.conns < 1 || c.conns > 1024 || c.clients < 1 || c.clients > 100000 ||
		c.keySize < 1 || c.keySize > 255 || c.valSize < 0 || c.valSize > 1<<20 ||
		c.keySpace < 1 || c.watchers < 1 || c.watchers > 1000000 || c.readRatio < 0 || c.readRatio > 1 || c.rate < 0 ||
		(c.total == 0 && c.duration <= 0) || c.timeoutMs < 1 ||
		c.leases < 1 || c.leases > 10000000 || (ttlSet && (c.leaseTTL < 1 || c.leaseTTL > 9000000000)) ||
		c.leaseWindow < 1 || c.leaseWindow > 100000 || !(c.leaseTimeout > 0) {
		return nil, errors.New("a flag is out of range (see --help)")
	}
	c.stallWriter = !*noStall
	if c.leaseTTL == 0 {
		c.leaseTTL = leaseTTLKeepalive
		if c.workload == "lease-churn" {
			c.leaseTTL = leaseTTLChurn
		}
	}
	return c, nil
}

// splitmix64, as keel-bench's rnd().
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// makeKey writes index i as big-endian digits padded with zeros, as keel-bench's make_key.
func makeKey(out []byte, i uint64) {
	for p := range out {
		out[p] = 0
	}
	for p := len(out) - 1; p >= 0 && i > 0; p-- {
		out[p] = byte(i)
		i >>= 8
	}
}

// zoneSource maps zone "z3" or "3" to its bench address 127.0.3.250.
func zoneSource(zone string) (string, error) {
	z := strings.TrimPrefix(strings.TrimPrefix(zone, "z"), "Z")
	n, err := strconv.Atoi(z)
	if err != nil || z == "" || n < 1 || n > 254 {
		return "", fmt.Errorf("--zone '%s' is not zN or N (1..254)", zone)
	}
	return fmt.Sprintf("127.0.%d.250", n), nil
}

// zoneOfAddress: a member listening on 127.0.N.x lives in zone zN.
func zoneOfAddress(hostport string) string {
	_, host, _ := endpoint.ParseEndpoint(hostport)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || ip[0] != 127 || ip[2] == 0 {
		return "?"
	}
	return fmt.Sprintf("z%d", ip[2])
}

func splitEndpoints(s string) []string {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

func quietLog() *zap.Config {
	lc := logutil.DefaultZapLoggerConfig
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	return &lc
}

func newClient(eps []string, source string) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 5 * time.Second,
		LogConfig:   quietLog(),
	}
	if source != "" {
		local := &net.TCPAddr{IP: net.ParseIP(source)}
		// Our dialer comes after clientv3's in the option list, so it is the one used.
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(
			func(ctx context.Context, addr string) (net.Conn, error) {
				proto, host, _ := endpoint.ParseEndpoint(addr)
				d := net.Dialer{LocalAddr: local}
				return d.DialContext(ctx, proto, host)
			})}
	}
	return clientv3.New(cfg)
}

// clusterInfo asks every endpoint for its status: which endpoint is the leader, and each
// member's zone (from its client address).
type clusterInfo struct {
	leaderEp   string
	zoneEp     map[string]string // zone -> an endpoint in it
	memberZone map[uint64]string
}

func learnCluster(eps []string, timeout time.Duration) (*clusterInfo, error) {
	cli, err := newClient(eps, "")
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	info := &clusterInfo{zoneEp: map[string]string{}, memberZone: map[uint64]string{}}
	var lastErr error
	for _, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		z := zoneOfAddress(ep)
		info.memberZone[st.Header.MemberId] = z
		if _, ok := info.zoneEp[z]; !ok {
			info.zoneEp[z] = ep
		}
		if st.Leader != 0 && st.Leader == st.Header.MemberId {
			info.leaderEp = ep
		}
	}
	if info.leaderEp == "" {
		if lastErr == nil {
			lastErr = errors.New("no member reports itself leader")
		}
		return nil, fmt.Errorf("finding the leader: %v", lastErr)
	}
	return info, nil
}

// stats keeps every sample (seconds).
type stats struct {
	samples []float64
	errors  map[string]uint64
}

type summary struct {
	Requests  int     `json:"requests"`
	TotalS    float64 `json:"total_s"`
	Rps       float64 `json:"rps"`
	AverageMs float64 `json:"average_ms"`
	StddevMs  float64 `json:"stddev_ms"`
	FastestMs float64 `json:"fastest_ms"`
	SlowestMs float64 `json:"slowest_ms"`
	P10Ms     float64 `json:"p10_ms"`
	P25Ms     float64 `json:"p25_ms"`
	P50Ms     float64 `json:"p50_ms"`
	P75Ms     float64 `json:"p75_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P95Ms     float64 `json:"p95_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p99.9_ms"`
}

var percentiles = []float64{10, 25, 50, 75, 90, 95, 99, 99.9}

// percentile by the nearest-rank method on sorted samples, as keel_stats_percentile.
func percentile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := math.Ceil(q*float64(n)/100 - 1e-9) // as in stats.c: tolerate inexact products
	i := 0
	if rank >= 1 {
		i = int(rank) - 1
	}
	if i >= n {
		i = n - 1
	}
	return sorted[i]
}

func summarize(samples []float64, totalS float64) (summary, []float64) {
	s := summary{Requests: len(samples), TotalS: totalS}
	p := make([]float64, len(percentiles))
	if len(samples) == 0 {
		return s, p
	}
	sort.Float64s(samples)
	sum := 0.0
	for _, v := range samples {
		sum += v
	}
	avg := sum / float64(len(samples))
	v := 0.0
	for _, x := range samples {
		v += (x - avg) * (x - avg)
	}
	for i, q := range percentiles {
		p[i] = percentile(samples, q)
	}
	s.AverageMs = avg * 1e3
	s.StddevMs = math.Sqrt(v/float64(len(samples))) * 1e3
	s.FastestMs = samples[0] * 1e3
	s.SlowestMs = samples[len(samples)-1] * 1e3
	if totalS > 0 {
		s.Rps = float64(len(samples)) / totalS
	}
	s.P10Ms, s.P25Ms, s.P50Ms, s.P75Ms = p[0]*1e3, p[1]*1e3, p[2]*1e3, p[3]*1e3
	s.P90Ms, s.P95Ms, s.P99Ms, s.P999Ms = p[4]*1e3, p[5]*1e3, p[6]*1e3, p[7]*1e3
	return s, p
}

// printText is etcd's (and keel-bench's) text report.
func printText(w io.Writer, samples []float64, s summary, p []float64, errs map[string]uint64) {
	fmt.Fprintf(w, "\nSummary:\n")
	fmt.Fprintf(w, "  Total:\t%.4f secs.\n", s.TotalS)
	fmt.Fprintf(w, "  Slowest:\t%.4f secs.\n", s.SlowestMs/1e3)
	fmt.Fprintf(w, "  Fastest:\t%.4f secs.\n", s.FastestMs/1e3)
	fmt.Fprintf(w, "  Average:\t%.4f secs.\n", s.AverageMs/1e3)
	fmt.Fprintf(w, "  Stddev:\t%.4f secs.\n", s.StddevMs/1e3)
	fmt.Fprintf(w, "  Requests/sec:\t%.4f\n", s.Rps)
	if len(samples) > 0 {
		const buckets = 10
		lo, hi := samples[0], samples[len(samples)-1]
		width := (hi - lo) / buckets
		counts := make([]int, buckets+1)
		for _, v := range samples {
			b := 0
			if width > 0 {
				b = int((v - lo) / width)
			}
			if b > buckets {
				b = buckets
			}
			counts[b]++
		}
		max := 1
		for _, c := range counts {
			if c > max {
				max = c
			}
		}
		fmt.Fprintf(w, "\nResponse time histogram:\n")
		for b, c := range counts {
			fmt.Fprintf(w, "  %.4f [%d]\t|%s\n", lo+width*float64(b), c,
				strings.Repeat("*", 40*c/max))
		}
		fmt.Fprintf(w, "\nLatency distribution:\n")
		for i, q := range percentiles {
			fmt.Fprintf(w, "  %g%% in %.4f secs.\n", q, p[i])
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nError distribution:\n")
		names := make([]string, 0, len(errs))
		for k := range errs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(w, "  [%d]\t%s\n", errs[k], k)
		}
	}
}

// pacer hands out request tokens at --rate, with at most 10 ms of burst, like keel-bench.
func pacer(rate float64, tokens chan<- struct{}, stop <-chan struct{}) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	acc := 0.0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		acc += rate / 1000
		for acc >= 1 {
			acc--
			select {
			case tokens <- struct{}{}:
			default: // bucket full: the token is lost
			}
		}
	}
}

// waitToken takes a rate token; false when the run's time is up first.
func waitToken(tokens <-chan struct{}, timed bool, deadline time.Time) bool {
	if !timed {
		<-tokens
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-tokens:
		return true
	case <-t.C:
		return false
	}
}

func errName(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "DeadlineExceeded"
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	return "OTHER"
}

// nativeEndian: watch-latency stamps are host-endian, as keel-bench's memcpy of a uint64.
var nativeEndian binary.ByteOrder = func() binary.ByteOrder {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}()

// procStart anchors the watch-latency stamps: time.Since(procStart) reads Go's monotonic clock,
// on the writer's side and on the watcher's, in this one process.
var procStart = time.Now()

// watchState: the watch workloads' watchers and what they have seen.
type watchState struct {
	watchers int
	latency  bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	events   int64 // atomic: PUT events delivered to all watchers
	expected int64 // atomic: watchers x acknowledged puts; -1 until the writers are done
	stopped  int32 // atomic: the run is over; later responses are not counted
	done     chan struct{}
	doneOnce sync.Once
	samples  [][]float64 // per watcher: put -> event latencies (s)
}

// startWatchers creates cfg.watchers watches over every key ("\x00" and up), watcher i on
// client i % len(clis), and returns once each has its created notice.
func startWatchers(cfg *config, clis []*clientv3.Client, timeout time.Duration) (*watchState, error) {
	ws := &watchState{watchers: cfg.watchers, latency: cfg.workload == "watch-latency",
		expected: -1, done: make(chan struct{}), samples: make([][]float64, cfg.watchers)}
	ctx, cancel := context.WithCancel(context.Background())
	ws.cancel = cancel
	created := make(chan error, cfg.watchers)
	for i := 0; i < cfg.watchers; i++ {
		ch := clis[i%len(clis)].Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCreatedNotify())
		ws.wg.Add(1)
		go ws.run(i, ch, created)
	}
	for i := 0; i < cfg.watchers; i++ {
		t := time.NewTimer(timeout)
		select {
		case err := <-created:
			t.Stop()
			if err != nil {
				ws.stop()
				return nil, fmt.Errorf("watch: %v", err)
			}
		case <-t.C:
			ws.stop()
			return nil, fmt.Errorf("watch: %d of %d watches created within %v", i, cfg.watchers, timeout)
		}
	}
	return ws, nil
}

func (ws *watchState) run(i int, ch clientv3.WatchChan, created chan<- error) {
	defer ws.wg.Done()
	isCreated := false
	for resp := range ch {
		if err := resp.Err(); err != nil {
			if !isCreated {
				isCreated = true
				created <- err
			} else if atomic.LoadInt32(&ws.stopped) == 0 {
				fmt.Fprintf(os.Stderr, "etcd-driver: a watch ended: %v\n", err)
			}
			continue
		}
		if resp.Created && !isCreated {
			isCreated = true
			created <- nil
		}
		if len(resp.Events) == 0 || atomic.LoadInt32(&ws.stopped) != 0 {
			continue
		}
		var now int64
		if ws.latency {
			now = int64(time.Since(procStart))
		}
		n := int64(0)
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			n++
			if ws.latency && len(ev.Kv.Value) >= 8 {
				sent := int64(nativeEndian.Uint64(ev.Kv.Value))
				ws.samples[i] = append(ws.samples[i], float64(now-sent)/1e9)
			}
		}
		if n == 0 {
			continue
		}
		got := atomic.AddInt64(&ws.events, n)
		if e := atomic.LoadInt64(&ws.expected); e >= 0 && got >= e {
			ws.doneOnce.Do(func() { close(ws.done) })
		}
	}
	if !isCreated {
		created <- errors.New("the watch closed before it was created")
	}
}

// settle: the writers are done with puts acknowledged; wait until every watcher has seen
// every one of them, at most 30 s, as keel-bench.
func (ws *watchState) settle(puts uint64) {
	e := int64(puts) * int64(ws.watchers)
	atomic.StoreInt64(&ws.expected, e)
	if atomic.LoadInt64(&ws.events) >= e {
		ws.doneOnce.Do(func() { close(ws.done) })
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-ws.done:
	case <-t.C:
		fmt.Fprintf(os.Stderr, "etcd-driver: %d of %d events arrived before the timeout\n",
			atomic.LoadInt64(&ws.events), e)
	}
}

// stop ends the watches (the clients must close too for their channels to close).
func (ws *watchState) stop() {
	atomic.StoreInt32(&ws.stopped, 1)
	ws.cancel()
}

type result struct {
	samples []float64
	byZone  map[string][]float64
	errs    map[string]uint64
}

// driverGCPercent: the load generator's garbage collector target, unless GOGC is set. With Go's
// default (100) over this program's small live heap, clientv3's per-request garbage made it
// collect ~55 times a second at 40k requests/s (GODEBUG=gctrace=1), and the driver, not the
// system under test, limited the keel-gateway rows on 2 cores. A load generator should cost as
// little as it can; every row (etcd's and the gateway's) runs the same setting.
const driverGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(driverGCPercent)
	}
	cfg, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
		fmt.Fprint(os.Stderr, usageText)
		os.Exit(2)
	}
	eps := splitEndpoints(cfg.endpoints)
	if len(eps) == 0 {
		fmt.Fprintf(os.Stderr, "etcd-driver: --endpoints is empty\n")
		os.Exit(2)
	}
	source := ""
	if cfg.zone != "" {
		if source, err = zoneSource(cfg.zone); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
			os.Exit(2)
		}
	}
	timeout := time.Duration(cfg.timeoutMs) * time.Millisecond

	// Which endpoint each connection talks to.
	var info *clusterInfo
	if cfg.target == "auto" || cfg.zone != "" {
		if info, err = learnCluster(eps, timeout); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
			os.Exit(1)
		}
	}
	connEps := make([][]string, cfg.conns)
	for i := range connEps {
		switch {
		case cfg.target == "spread":
			connEps[i] = []string{eps[i%len(eps)]}
		case cfg.target == "all":
			connEps[i] = eps // clientv3's balancer moves on when a member fails
		case cfg.serializable && cfg.zone != "" && info.zoneEp[cfg.zone] != "":
			if cfg.workload == "range" {
				connEps[i] = []string{info.zoneEp[cfg.zone]}
			} else {
				// Mixed workloads: the same connection carries the writes, so the leader.
				connEps[i] = []string{info.leaderEp}
			}
		default:
			connEps[i] = []string{info.leaderEp}
		}
	}
	clis := make([]*clientv3.Client, cfg.conns)
	for i := range clis {
		if clis[i], err = newClient(connEps[i], source); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
			os.Exit(1)
		}
		// Connect now, so that dialling is not timed.
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, err = clis[i].Get(ctx, "etcd-driver-warmup", clientv3.WithSerializable())
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: connecting to %v: %v\n", connEps[i], err)
			os.Exit(1)
		}
	}

	seedRng := rng{state: cfg.seed}
	value := make([]byte, cfg.valSize)
	for i := range value {
		value[i] = byte('a' + seedRng.next()%26)
	}
	val := string(value)

	if cfg.leasing() {
		runLease(cfg, clis, connEps, source, timeout, val)
		return
	}

	// Watch workloads: every watcher is created before the writers start.
	var ws *watchState
	if cfg.watching() {
		if ws, err = startWatchers(cfg, clis, timeout); err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
			os.Exit(1)
		}
	}

	var issued, seqKey uint64
	var tokens chan struct{}
	stopPacer := make(chan struct{})
	if cfg.rate > 0 {
		tokens = make(chan struct{}, int(cfg.rate/100)+1)
		go pacer(cfg.rate, tokens, stopPacer)
	}
	// --timeline: a line per answer, "client sent_us answered_us ok(0|1)", as keel-bench's.
	var tlMu sync.Mutex
	var tl *bufio.Writer
	if cfg.timeline != "" {
		f, err := os.Create(cfg.timeline)
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-driver: --timeline: %v\n", err)
			os.Exit(2)
		}
		defer f.Close()
		tl = bufio.NewWriterSize(f, 1<<20)
		defer tl.Flush()
	}
	note := func(c int, t0 time.Time, ok bool) {
		if tl == nil {
			return
		}
		okv := 0
		if ok {
			okv = 1
		}
		tlMu.Lock()
		fmt.Fprintf(tl, "%d %d %d %d\n", c, t0.UnixNano()/1000, time.Now().UnixNano()/1000, okv)
		tlMu.Unlock()
	}
	results := make([]result, cfg.clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(time.Duration(cfg.duration * float64(time.Second)))
	finished := func() bool {
		if cfg.duration > 0 {
			return !time.Now().Before(deadline)
		}
		return atomic.AddUint64(&issued, 1) > cfg.total
	}
	for c := 0; c < cfg.clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cli := clis[c%cfg.conns]
			r := rng{state: cfg.seed ^ (uint64(c+1) * 0x9e3779b97f4a7c15)}
			res := result{errs: map[string]uint64{}}
			if cfg.zone != "" {
				res.byZone = map[string][]float64{}
			}
			key := make([]byte, cfg.keySize)
			stamped := []byte(val)
			var readOpts []clientv3.OpOption
			if cfg.serializable {
				readOpts = append(readOpts, clientv3.WithSerializable())
			}
			for !finished() {
				if tokens != nil && !waitToken(tokens, cfg.duration > 0, deadline) {
					break
				}
				var idx uint64
				if cfg.sequential {
					idx = (atomic.AddUint64(&seqKey, 1) - 1) % cfg.keySpace
				} else {
					idx = r.next() % cfg.keySpace
				}
				makeKey(key, idx)
				k := string(key)
				read := float64(r.next()%1000000)/1e6 < cfg.readRatio
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				t0 := time.Now()
				var hdr *pb.ResponseHeader
				var err error
				switch {
				case cfg.workload == "put" || cfg.watching() || (cfg.workload == "mixed" && !read):
					v := val
					if cfg.workload == "watch-latency" && len(stamped) >= 8 {
						// The send time rides in the value, so the watcher measures put -> event.
						nativeEndian.PutUint64(stamped, uint64(time.Since(procStart)))
						v = string(stamped)
					}
					var resp *clientv3.PutResponse
					if resp, err = cli.Put(ctx, k, v); err == nil {
						hdr = resp.Header
					}
				case cfg.workload == "range" || cfg.workload == "mixed":
					var resp *clientv3.GetResponse
					if resp, err = cli.Get(ctx, k, readOpts...); err == nil {
						hdr = resp.Header
					}
				default: // txn-put, txn-mixed: a compare that holds, evaluated for real
					op := clientv3.OpPut(k, val)
					if cfg.workload == "txn-mixed" && read {
						op = clientv3.OpGet(k, readOpts...)
					}
					var resp *clientv3.TxnResponse
					resp, err = cli.Txn(ctx).
						If(clientv3.Compare(clientv3.ModRevision(k), "<", math.MaxInt64)).
						Then(op).Commit()
					if err == nil {
						hdr = resp.Header
					}
				}
				lat := time.Since(t0).Seconds()
				cancel()
				note(c, t0, err == nil)
				if err != nil {
					res.errs[errName(err)]++
					continue
				}
				res.samples = append(res.samples, lat)
				if res.byZone != nil {
					z := info.memberZone[hdr.MemberId]
					if z == "" {
						z = "?"
					}
					res.byZone[z] = append(res.byZone[z], lat)
				}
			}
			results[c] = res
		}(c)
	}
	wg.Wait()
	close(stopPacer)
	var puts uint64
	for _, r := range results {
		puts += uint64(len(r.samples))
	}
	if ws != nil {
		ws.settle(puts)
	}
	totalS := time.Since(start).Seconds()
	if ws != nil {
		ws.stop()
	}
	for _, cli := range clis {
		cli.Close()
	}
	var wrep *jsonWatch
	var evSamples []float64
	if ws != nil {
		ws.wg.Wait() // every watch channel is closed now
		wrep = &jsonWatch{Watchers: cfg.watchers, Events: uint64(atomic.LoadInt64(&ws.events))}
		if e := atomic.LoadInt64(&ws.expected); e > 0 {
			wrep.EventsExpected = uint64(e)
		}
		if totalS > 0 {
			wrep.EventsPerSec = float64(wrep.Events) / totalS
		}
		if ws.latency {
			for _, s := range ws.samples {
				evSamples = append(evSamples, s...)
			}
			ev, _ := summarize(evSamples, totalS)
			wrep.EventLatency = &ev
		}
	}

	var all []float64
	byZone := map[string][]float64{}
	errs := map[string]uint64{}
	for _, r := range results {
		all = append(all, r.samples...)
		for z, s := range r.byZone {
			byZone[z] = append(byZone[z], s...)
		}
		for k, v := range r.errs {
			errs[k] += v
		}
	}
	sum, p := summarize(all, totalS)
	if !cfg.json {
		printText(os.Stdout, all, sum, p, errs)
		if wrep != nil {
			fmt.Printf("\nWatch: %d watchers, %d events delivered (%d expected), %.1f events/sec\n",
				wrep.Watchers, wrep.Events, wrep.EventsExpected, wrep.EventsPerSec)
			if wrep.EventLatency != nil {
				ev := wrep.EventLatency
				fmt.Printf("Put -> event latency: p50 %.4f p90 %.4f p99 %.4f p99.9 %.4f secs. (%d samples)\n",
					ev.P50Ms/1e3, ev.P90Ms/1e3, ev.P99Ms/1e3, ev.P999Ms/1e3, ev.Requests)
			}
		}
		zones := make([]string, 0, len(byZone))
		for z := range byZone {
			zones = append(zones, z)
		}
		sort.Strings(zones)
		for _, z := range zones {
			zs, zp := summarize(byZone[z], totalS)
			fmt.Printf("\nTarget zone %s: %d requests, p50 %.4f p99 %.4f secs.\n", z, zs.Requests, zp[2], zp[6])
		}
	} else {
		writeJSON(cfg, sum, errs, byZone, totalS, wrep, nil)
	}
	if sum.Requests == 0 {
		os.Exit(1)
	}
}

// The JSON report, field for field keel-bench's (json-c keeps insertion order; so do these structs).
type jsonConfig struct {
	Workload       string  `json:"workload"`
	Endpoints      string  `json:"endpoints"`
	Conns          int     `json:"conns"`
	Clients        int     `json:"clients"`
	Total          uint64  `json:"total"`
	DurationS      float64 `json:"duration_s"`
	Rate           float64 `json:"rate"`
	KeySize        int     `json:"key_size"`
	ValSize        int     `json:"val_size"`
	KeySpaceSize   uint64  `json:"key_space_size"`
	SequentialKeys bool    `json:"sequential_keys"`
	Consistency    string  `json:"consistency"`
	ReadRatio      float64 `json:"read_ratio"`
	Zone           string  `json:"zone"`
	Seed           uint64  `json:"seed"`
	Leases         uint64  `json:"leases"`
	LeaseTTL       int64   `json:"lease_ttl"`
	LeaseWindow    int     `json:"lease_window"`
}

type jsonMachine struct {
	Kernel string `json:"kernel,omitempty"`
	Arch   string `json:"arch,omitempty"`
	Cpus   int    `json:"cpus"`
}

type jsonReport struct {
	Tool         string             `json:"tool"`
	Config       jsonConfig         `json:"config"`
	GitRevision  string             `json:"git_revision"`
	Machine      jsonMachine        `json:"machine"`
	Summary      summary            `json:"summary"`
	Errors       map[string]uint64  `json:"errors"`
	ByTargetZone map[string]summary `json:"by_target_zone"`
	Watch        *jsonWatch         `json:"watch,omitempty"`
	Lease        *jsonLease         `json:"lease,omitempty"`
}

// jsonWatch: the watch workloads' "watch" object; event_latency for watch-latency only.
type jsonWatch struct {
	Watchers       int      `json:"watchers"`
	Events         uint64   `json:"events"`
	EventsExpected uint64   `json:"events_expected"`
	EventsPerSec   float64  `json:"events_per_sec"`
	EventLatency   *summary `json:"event_latency,omitempty"`
}

func utsString(a [65]int8) string {
	b := make([]byte, 0, len(a))
	for _, c := range a {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func writeJSON(cfg *config, sum summary, errs map[string]uint64, byZone map[string][]float64, totalS float64,
	watch *jsonWatch, lease *jsonLease) {
	rep := jsonReport{
		Tool: "etcd-driver",
		Config: jsonConfig{
			Workload: cfg.workload, Endpoints: cfg.endpoints, Conns: cfg.conns,
			Clients: cfg.clients, Total: cfg.total, DurationS: cfg.duration, Rate: cfg.rate,
			KeySize: cfg.keySize, ValSize: cfg.valSize, KeySpaceSize: cfg.keySpace,
			SequentialKeys: cfg.sequential, Consistency: cfg.consistency,
			ReadRatio: cfg.readRatio, Zone: cfg.zone, Seed: cfg.seed,
			Leases: cfg.leases, LeaseTTL: cfg.leaseTTL, LeaseWindow: cfg.leaseWindow,
		},
		GitRevision:  gitRevision,
		Machine:      jsonMachine{Cpus: runtime.NumCPU()},
		Summary:      sum,
		Errors:       errs,
		ByTargetZone: map[string]summary{},
		Watch:        watch,
		Lease:        lease,
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		rep.Machine.Kernel = utsString(u.Release)
		rep.Machine.Arch = utsString(u.Machine)
	}
	for z, s := range byZone {
		rep.ByTargetZone[z], _ = summarize(s, totalS)
	}
	out, err := json.Marshal(rep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd-driver: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
