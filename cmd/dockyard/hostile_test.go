package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/dockyard/dockyard/config"
)

// The attack of TestHostileConnectionsLeaveRoomForRealClients: slowloris connections
// from slowAddrs addresses, stalled uploads from stallAddrs, each address held to
// perIP connections by the server.
const (
	slowAddrs, slowPerAddr   = 10, 200
	stallAddrs, stallPerAddr = 4, 50
	perIP                    = 100
	// stallAfter is what a stalled upload sends of its body before it stops: enough
	// to fill the buffers it takes from the pool.
	stallAfter = 256 << 10
)

// A registry on the internet meets clients that open connections and never finish a
// request. dockyard, in a process of its own with header and read timeouts of 10s and
// 100 connections per address, takes 2,000 slowloris connections from ten addresses
// (headers trickled a byte a second) and 200 uploads from four addresses that stall
// mid-body. Meanwhile a client on another address pushes and pulls images,
// byte-identical. What is over an address's limit is refused at once (429), the
// slowloris are cut at the header timeout and the uploads at the read timeout (408),
// an address at its limit of open uploads is told when to retry (429, Retry-After);
// the server's connections, goroutines and resident memory stay bounded throughout,
// and once it has cut the attackers off, its connections and goroutines are back near
// where they started (its memory within the same bound: Go returns it to the system
// slowly).
func TestHostileConnectionsLeaveRoomForRealClients(t *testing.T) {
	raiseFileLimit(t, 8192) // 2,200 attacking connections, both ends in this machine
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "dockyard.yaml")
	// upload_buffers is scaled down with the rest: the pool is part of the memory bound.
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
log: {access: false, level: warn}
http: {header_timeout: 10s, read_timeout: 10s, max_conns: 4096, max_conns_per_ip: %d}
limits: {upload_sessions_per_client: %d, upload_buffers: 16MiB}
`, perIP, stallPerAddr)), 0o600)
	cmd := dockyardCommand(t, "serve", "--config", cfg, "--data", filepath.Join(dir, "data"), "--listen", addr)
	logs := &syncWriter{w: &bytes.Buffer{}}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("dockyard's log:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dockyard did not start")
		}
	}
	// The client's own transport: its idle connections are closed before each count.
	client := remote.DefaultTransport.(*http.Transport).Clone()
	defer client.CloseIdleConnections()
	pushPull := func(tag string) {
		t.Helper()
		defer client.CloseIdleConnections()
		img, err := random.Image(256<<10, 3)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(addr+"/team/app:"+tag, name.Insecure)
		if err := remote.Write(ref, img, remote.WithTransport(client)); err != nil {
			t.Fatalf("push %s: %v", tag, err)
		}
		got, err := remote.Image(ref, remote.WithTransport(client))
		if err != nil {
			t.Fatalf("pull %s: %v", tag, err)
		}
		want, _ := img.RawManifest()
		if raw, _ := got.RawManifest(); !bytes.Equal(raw, want) {
			t.Errorf("pull %s: the manifest differs", tag)
		}
		if err := validate.Image(got); err != nil { // every blob, against its digest
			t.Errorf("pull %s: %v", tag, err)
		}
	}
	pushPull("warm-up")
	base := holdings(t, addr, cmd.Process.Pid)
	began := time.Now()
	t.Logf("before: %v", base)

	stop := make(chan struct{})
	defer close(stop)
	var attack sync.WaitGroup
	var mu sync.Mutex
	var trickled []net.Conn
	outcomes := map[string]map[int]int{} // source address → status → connections
	record := func(src string, status int) {
		mu.Lock()
		defer mu.Unlock()
		if outcomes[src] == nil {
			outcomes[src] = map[int]int{}
		}
		outcomes[src][status]++
	}
	// await reads the answer that ends c (0: closed without one) in the background.
	var answers sync.Map // kind and status → an answer seen (Retry-After and body)
	await := func(kind, src string, c net.Conn, br *bufio.Reader) {
		attack.Add(1)
		go func() {
			defer attack.Done()
			c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			status := 0
			if resp, err := http.ReadResponse(br, nil); err == nil {
				b, _ := io.ReadAll(resp.Body)
				status = resp.StatusCode
				answers.LoadOrStore(fmt.Sprint(kind, " ", status), "Retry-After "+resp.Header.Get("Retry-After")+" "+string(b))
			}
			record(src, status)
		}()
	}
	var dialing sync.WaitGroup
	for a := range slowAddrs {
		src := fmt.Sprintf("127.0.0.%d", 10+a)
		dialing.Add(1)
		go func() {
			defer dialing.Done()
			for range slowPerAddr {
				c := dialFrom(t, src, addr)
				if c == nil {
					return
				}
				io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
				await("slowloris", src, c, bufio.NewReader(c))
				mu.Lock()
				trickled = append(trickled, c)
				mu.Unlock()
			}
		}()
	}
	go func() { // a byte a second on every slowloris connection
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			mu.Lock()
			conns := append([]net.Conn(nil), trickled...)
			mu.Unlock()
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				c.Write([]byte("a"))
			}
		}
	}()
	tooMany := make(chan string, stallAddrs)
	for a := range stallAddrs {
		src := fmt.Sprintf("127.0.0.%d", 50+a)
		dialing.Add(1)
		go func() {
			defer dialing.Done()
			start := func() (net.Conn, *bufio.Reader, *http.Response) {
				c := dialFrom(t, src, addr)
				if c == nil {
					return nil, nil, nil
				}
				br := bufio.NewReader(c)
				io.WriteString(c, "POST /v2/attack/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Errorf("starting an upload from %s: %v", src, err)
					return c, br, nil
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body = io.NopCloser(bytes.NewReader(b))
				return c, br, resp
			}
			for range stallPerAddr {
				c, br, resp := start()
				if resp == nil || resp.StatusCode != 202 {
					t.Errorf("starting an upload from %s: %v", src, resp)
					return
				}
				io.WriteString(c, "PATCH "+resp.Header.Get("Location")+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10485760\r\n\r\n"+strings.Repeat("x", stallAfter))
				await("upload", src, c, br)
			}
			// One more than the address may have open.
			if c, _, resp := start(); resp != nil {
				b, _ := io.ReadAll(resp.Body)
				tooMany <- fmt.Sprintf("%d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
				c.Close()
			}
		}()
	}
	dialing.Wait()
	close(tooMany)
	for answer := range tooMany {
		if !strings.HasPrefix(answer, "429 ") || strings.Contains(answer, `Retry-After ""`) || !strings.Contains(answer, "TOOMANYREQUESTS") {
			t.Errorf("an upload over the address's limit of open uploads: %s", answer)
		}
	}
	during := holdings(t, addr, cmd.Process.Pid)
	t.Logf("under attack (%s in): %v", time.Since(began).Round(time.Millisecond), during)
	pushPull("1")
	pushPull("2")
	if s := holdings(t, addr, cmd.Process.Pid); s.goroutines > during.goroutines || s.rss > during.rss || s.conns > during.conns {
		during = s
		t.Logf("under attack, after the pushes and pulls (%s in): %v", time.Since(began).Round(time.Millisecond), during)
	}

	// Bounds. Connections: each attacking address's limit, and a few of the client's.
	// Goroutines: one per connection, two more per upload copying (hashing and writing
	// beside reading), refused connections lingering for a second (at most 64), and
	// some for the client's requests. Memory: per connection, the part of its read
	// buffer (max_header_size, 16 KiB) and of its goroutine stack it has used, and its
	// request's state — measured at about 15 KiB, 32 KiB allowed for the garbage
	// collector's headroom (under the race detector, whose own memory grows with
	// every goroutine and access, about 250 KiB: 320 allowed); the upload buffer pool
	// (16 MiB) and the 64 KiB buffer of each upload the pool had none left for; and
	// 32 MiB for the client's pushes and pulls (they stream, never buffered whole).
	admitted := slowAddrs*perIP + stallAddrs*stallPerAddr
	if max := admitted + 20; during.conns > max {
		t.Errorf("%d connections open under attack, more than the %d the limits allow", during.conns, max)
	}
	if max := base.goroutines + admitted + 2*stallAddrs*stallPerAddr + 64 + 100; during.goroutines > max {
		t.Errorf("%d goroutines under attack (%d before), over the bound %d", during.goroutines, base.goroutines, max)
	}
	perConn := int64(32 << 10)
	if raceEnabled {
		perConn = 320 << 10
	}
	rssBound := int64(admitted)*perConn + 16<<20 + stallAddrs*stallPerAddr*64<<10 + 32<<20
	if during.rss-base.rss > rssBound {
		t.Errorf("memory grew by %d MiB under attack, over the bound %d MiB", (during.rss-base.rss)>>20, rssBound>>20)
	}

	// The server ends every attacking connection itself: the attackers never stop.
	waited := make(chan struct{})
	go func() { attack.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Minute):
		t.Fatal("attacking connections still open 2 minutes on")
	}
	mu.Lock()
	for a := range slowAddrs {
		src := fmt.Sprintf("127.0.0.%d", 10+a)
		got := outcomes[src]
		if got[429] == 0 || got[429]+got[408] != slowPerAddr {
			t.Errorf("slowloris connections from %s ended %v, want each refused at once (429) or cut at the header timeout (408), some refused", src, got)
		}
	}
	for a := range stallAddrs {
		src := fmt.Sprintf("127.0.0.%d", 50+a)
		if got := outcomes[src]; got[408] != stallPerAddr {
			t.Errorf("stalled uploads from %s ended %v, want all %d cut at the read timeout (408)", src, got, stallPerAddr)
		}
	}
	mu.Unlock()
	for answer, want := range map[string]string{"slowloris 429": "http.max_conns_per_ip", "slowloris 408": "http.header_timeout",
		"upload 408": "http.read_timeout"} {
		b, _ := answers.Load(answer)
		if s, _ := b.(string); !strings.Contains(s, want) || !strings.Contains(s, `"code":"`) ||
			strings.HasSuffix(answer, "429") && strings.HasPrefix(s, "Retry-After  ") {
			t.Errorf("%s: %q, want an OCI error naming %s (and Retry-After, for 429)", answer, s, want)
		}
	}

	// Released: connections and goroutines back near where they were (fasthttp keeps
	// an idle worker goroutine for up to 10s before letting it go).
	var after sample
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		after = holdings(t, addr, cmd.Process.Pid)
		if after.goroutines <= base.goroutines+20 && after.conns <= base.conns+2 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("after (%s in): %v", time.Since(began).Round(time.Millisecond), after)
	if after.goroutines > base.goroutines+20 || after.conns > base.conns+2 {
		t.Errorf("after the attack: %v, before it: %v", after, base)
	}
	if after.rss-base.rss > rssBound {
		t.Errorf("memory after the attack grew by %d MiB, over the bound %d MiB", (after.rss-base.rss)>>20, rssBound>>20)
	}
	pushPull("after")
}

// sample is what the server holds at one moment.
type sample struct {
	goroutines, conns int
	rss               int64
}

func (s sample) String() string {
	return fmt.Sprintf("%d goroutines, %d connections, %d MiB resident", s.goroutines, s.conns, s.rss>>20)
}

// holdings reads the server's goroutines and open connections from /metrics and its
// resident memory from /proc.
func holdings(t *testing.T, addr string, pid int) sample {
	t.Helper()
	fams := scrape(t, addr, "")
	s := sample{goroutines: int(metricValue(fams, "go_goroutines", nil)), conns: int(metricValue(fams, "dockyard_http_connections", nil))}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			s.rss = kb << 10
		}
	}
	if s.goroutines == 0 || s.rss == 0 {
		t.Fatalf("no goroutine count or resident size: %+v", s)
	}
	return s
}

// dialFrom opens a connection to addr from the loopback address src (all of
// 127.0.0.0/8 is loopback: each address is another client).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Errorf("dial from %s: %v", src, err)
		return nil
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raiseFileLimit makes sure this process, and the processes it starts, may open n
// files (as root it raises the hard limit too).
func raiseFileLimit(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur, lim.Max = n, max(lim.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("the test needs %d open files (ulimit -n): %v", n, err)
	}
}

// A reload applies the client limits; the header timeout and size, which the HTTP
// server is built with, it names as needing a restart.
func TestReloadAppliesClientLimitsButNotHeaderSettings(t *testing.T) {
	old, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	limits := *old
	limits.HTTP.MaxConns, limits.HTTP.MaxConnsPerIP, limits.HTTP.MaxBodySize = 10, 2, 1<<10
	limits.HTTP.RateLimit = config.HTTPRateLimit{PerSecond: 1, Burst: 1}
	if got := restartOnly(old, &limits); len(got) != 0 {
		t.Errorf("changed client limits need a restart: %v", got)
	}
	for _, change := range []func(*config.HTTP){
		func(h *config.HTTP) { h.HeaderTimeout = time.Second },
		func(h *config.HTTP) { h.MaxHeaderSize = 8 << 10 },
	} {
		c := *old
		change(&c.HTTP)
		if got := restartOnly(old, &c); len(got) != 1 || !strings.HasPrefix(got[0], "http (timeouts") {
			t.Errorf("a changed header setting: restart needed for %v", got)
		}
	}
}

// Serving more connections than the process may open files is said at start.
func TestAnOpenFileLimitBelowMaxConnsIsWarnedOf(t *testing.T) {
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg.HTTP.MaxConns = 1 << 30
	warnFileLimit(cfg, slog.New(slog.NewTextHandler(&out, nil)))
	if !strings.Contains(out.String(), "http.max_conns") {
		t.Errorf("no warning for max_conns %d: %q", cfg.HTTP.MaxConns, out.String())
	}
	out.Reset()
	cfg.HTTP.MaxConns = 16
	warnFileLimit(cfg, slog.New(slog.NewTextHandler(&out, nil)))
	if out.Len() != 0 {
		t.Errorf("a warning for max_conns 16: %q", out.String())
	}
}
