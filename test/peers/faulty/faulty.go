// Package faulty is a fault-injecting HTTP reverse proxy for dockyard's tests: it
// stands between dockyard and a real upstream registry and, request by request, adds
// latency, resets or closes the connection partway through a body, flips a bit,
// throttles, answers a status of its own (a 429 storm with Retry-After) or hides a
// Range header from the upstream. It records every request it saw.
//
// Faults are given as rules, from Go (Proxy.Add) or over HTTP on the proxy's own
// address (the /-/faulty/ paths; see ServeHTTP), which is how the command
// test/peers/faultyproxy is driven.
package faulty

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cut is how a body is cut short.
type Cut string

const (
	// Reset aborts the connection (TCP RST). The client receives at most CutAt bytes:
	// a reset drops what the kernel had not sent yet.
	Reset Cut = "reset"
	// Close closes the connection cleanly (FIN) after exactly CutAt bytes.
	Close Cut = "close"
)

// Fault is what happens to one request. The zero Fault forwards it untouched. Body
// faults (cut, flip, throttle, hold) apply to 200 and 206 answers only.
type Fault struct {
	// Latency delays the request before anything else happens.
	Latency time.Duration `json:"latency,omitempty"`
	// Drop resets the connection without answering.
	Drop bool `json:"drop,omitempty"`
	// Status answers the request with this status instead of forwarding it, with
	// RetryAfter as its Retry-After header and an OCI error body.
	Status     int    `json:"status,omitempty"`
	RetryAfter string `json:"retry_after,omitempty"`
	// Cut ends the body after CutAt bytes (a negative CutAt: at a random offset
	// inside the body, which needs a Content-Length).
	Cut   Cut   `json:"cut,omitempty"`
	CutAt int64 `json:"cut_at,omitempty"`
	// Flip flips the lowest bit of the body byte at FlipAt (negative: a random one).
	Flip   bool  `json:"flip,omitempty"`
	FlipAt int64 `json:"flip_at,omitempty"`
	// BytesPerSecond throttles the body.
	BytesPerSecond int64 `json:"bytes_per_second,omitempty"`
	// IgnoreRange drops the request's Range header: the upstream answers the whole
	// body, as a server without range support does.
	IgnoreRange bool `json:"ignore_range,omitempty"`
	// Hold (from Go only) pauses the body after HoldAt bytes until it is closed, the
	// proxy goes down or the client leaves.
	Hold   <-chan struct{} `json:"-"`
	HoldAt int64           `json:"hold_at,omitempty"`
}

// Rule applies its Fault to the requests it matches. Rules are tried in the order
// they were added; the first that matches applies.
type Rule struct {
	Method string `json:"method,omitempty"` // "" matches any
	Path   string `json:"path,omitempty"`   // a substring of the path ("/blobs/"); "" matches any
	// Match (from Go only) must also hold when set.
	Match func(*http.Request) bool `json:"-"`
	// Times is how many requests the rule applies to; 0: every one it matches.
	Times int `json:"times,omitempty"`
	// Probability, when between 0 and 1, is the chance that the rule applies to a
	// request it matches (a soak test's random faults); 0 means always.
	Probability float64 `json:"probability,omitempty"`
	Fault
}

// UnmarshalJSON reads a rule, with its latency either in nanoseconds or as a
// duration string ("250ms").
func (r *Rule) UnmarshalJSON(b []byte) error {
	type plain Rule
	aux := struct {
		*plain
		Latency json.RawMessage `json:"latency,omitempty"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	if len(aux.Latency) == 0 {
		return nil
	}
	var s string
	if json.Unmarshal(aux.Latency, &s) == nil {
		d, err := time.ParseDuration(s)
		r.Latency = d
		return err
	}
	return json.Unmarshal(aux.Latency, &r.Latency)
}

func (r *Rule) matches(req *http.Request) bool {
	return (r.Method == "" || r.Method == req.Method) &&
		strings.Contains(req.URL.Path, r.Path) &&
		(r.Match == nil || r.Match(req)) &&
		(r.Probability <= 0 || r.Probability >= 1 || rand.Float64() < r.Probability)
}

// Seen is one request the proxy received.
type Seen struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Range  string `json:"range,omitempty"` // the request's Range header, as the client sent it
	// Status is what the client was answered (0 if nothing was).
	Status int `json:"status"`
	// Sent is how many body bytes were written towards the client.
	Sent int64 `json:"sent"`
	// Fault says what was done: "" (nothing), "latency", "drop", "status", "reset@N",
	// "close@N", "flip@N", "throttle", "ignore-range", "hold@N", "down"; several are
	// joined by commas.
	Fault string `json:"fault,omitempty"`
}

// maxLog bounds the requests a proxy remembers (the oldest are dropped).
const maxLog = 100000

// Proxy is a fault-injecting reverse proxy of one upstream.
type Proxy struct {
	// URL is where the proxy listens (http://127.0.0.1:PORT) when started by Start.
	URL string

	rp  *httputil.ReverseProxy
	srv *http.Server

	mu      sync.Mutex
	rules   []*Rule
	log     []*Seen
	dropped int
	down    chan struct{} // closed while the proxy is down, replaced when it comes back
}

// New returns a proxy of upstream (http://host:port) to serve with ServeHTTP.
func New(upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("faulty: upstream %q: want http(s)://host[:port]", upstream)
	}
	p := &Proxy{down: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // Location headers point back at the proxy
		},
		FlushInterval: -1, // every byte goes on at once: clients see bodies as they come
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	return p, nil
}

// Start serves a proxy of upstream on a free loopback port; Close stops it.
func Start(upstream string) (*Proxy, error) {
	p, err := New(upstream)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.URL = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: p, ErrorLog: log.New(io.Discard, "", 0)}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops a proxy started by Start, cutting the requests in flight.
func (p *Proxy) Close() {
	p.SetDown(true)
	if p.srv != nil {
		p.srv.Close()
	}
}

// Add appends rules.
func (p *Proxy) Add(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rules {
		p.rules = append(p.rules, &r)
	}
}

// Clear removes every rule.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// SetDown takes the proxy down (every request, and every body in flight, is reset) or
// brings it back: a dying upstream.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.down:
		if !down {
			p.down = make(chan struct{})
		}
	default:
		if down {
			close(p.down)
		}
	}
}

func (p *Proxy) isDown() bool {
	select {
	case <-p.downCh():
		return true
	default:
		return false
	}
}

// downCh is closed when the proxy goes down.
func (p *Proxy) downCh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// Log returns the requests seen so far, oldest first.
func (p *Proxy) Log() []Seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Seen, len(p.log))
	for i, s := range p.log {
		out[i] = *s
	}
	return out
}

// Count is how many of the requests seen so far match.
func (p *Proxy) Count(match func(Seen) bool) int {
	n := 0
	for _, s := range p.Log() {
		if match(s) {
			n++
		}
	}
	return n
}

// ResetLog forgets the requests seen so far.
func (p *Proxy) ResetLog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log, p.dropped = nil, 0
}

// pick returns the fault for req, using up one of its rule's times.
func (p *Proxy) pick(req *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range p.rules {
		if !r.matches(req) {
			continue
		}
		if r.Times > 0 {
			if r.Times--; r.Times == 0 {
				p.rules = append(p.rules[:i:i], p.rules[i+1:]...)
			}
		}
		return r.Fault
	}
	return Fault{}
}

func (p *Proxy) record(s *Seen) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.log) >= maxLog {
		p.log = p.log[1:]
		p.dropped++
	}
	p.log = append(p.log, s)
}

// update changes a logged request under the lock (Log may be reading it).
func (p *Proxy) update(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

// ServeHTTP proxies a request with its fault. The proxy's own paths:
//
//	GET    /-/faulty/rules   the rules not used up (JSON)
//	POST   /-/faulty/rules   add rules (a JSON rule or array of rules)
//	DELETE /-/faulty/rules   remove every rule
//	GET    /-/faulty/log     the requests seen (JSON array of Seen)
//	DELETE /-/faulty/log     forget them
//	PUT    /-/faulty/down    take the proxy down; DELETE brings it back
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/-/faulty/") {
		p.control(w, r)
		return
	}
	seen := &Seen{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")}
	p.record(seen)
	note := func(what string) {
		p.update(func() {
			if seen.Fault != "" {
				seen.Fault += ","
			}
			seen.Fault += what
		})
	}
	if p.isDown() {
		note("down")
		abort(w, Reset, false)
		return
	}
	f := p.pick(r)
	if f.Latency > 0 {
		note("latency")
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if f.Drop {
		note("drop")
		abort(w, Reset, false)
		return
	}
	if f.Status != 0 {
		note("status")
		p.update(func() { seen.Status = f.Status })
		answer(w, f.Status, f.RetryAfter)
		return
	}
	if f.IgnoreRange && r.Header.Get("Range") != "" {
		note("ignore-range")
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	}
	fw := &faultWriter{ResponseWriter: w, p: p, f: f, seen: seen, note: note, done: r.Context().Done(), down: p.downCh()}
	p.rp.ServeHTTP(fw, r)
}

// answer writes a status of the proxy's own, with an OCI error body.
func answer(w http.ResponseWriter, status int, retryAfter string) {
	code := "UNAVAILABLE"
	if status == http.StatusTooManyRequests {
		code = "TOOMANYREQUESTS"
	}
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by the faulty proxy"}]}`, code)
}

// abort ends the connection under w: a reset or a clean close, after sending what
// was written when flush.
func abort(w http.ResponseWriter, how Cut, flush bool) {
	if f, ok := w.(http.Flusher); ok && flush {
		f.Flush()
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	if tc, ok := conn.(*net.TCPConn); ok && how == Reset {
		tc.SetLinger(0)
	}
	conn.Close()
}

var errCut = errors.New("faulty: body cut")

// faultWriter applies a fault's body faults as the upstream's answer passes through.
type faultWriter struct {
	http.ResponseWriter
	p    *Proxy
	f    Fault
	seen *Seen
	note func(string)
	done <-chan struct{} // the client left
	down <-chan struct{} // closed when the proxy goes down

	body       bool  // the answer is a 200 or 206: body faults apply
	sent       int64 // body bytes written
	cutAt      int64 // -1: none
	flipAt     int64 // -1: none
	held, cut  bool
	headerDone bool
}

func (w *faultWriter) WriteHeader(code int) {
	if w.headerDone || code < 200 {
		if code < 200 {
			w.ResponseWriter.WriteHeader(code)
		}
		return
	}
	w.headerDone = true
	w.p.update(func() { w.seen.Status = code })
	w.cutAt, w.flipAt = -1, -1
	w.body = code == http.StatusOK || code == http.StatusPartialContent
	if w.body {
		length, lerr := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
		offset := func(at int64) int64 {
			if at >= 0 {
				return at
			}
			if lerr != nil || length <= 0 {
				return 0
			}
			return rand.Int64N(length)
		}
		if w.f.Cut != "" {
			w.cutAt = offset(w.f.CutAt)
		}
		if w.f.Flip {
			w.flipAt = offset(w.f.FlipAt)
		}
		if w.f.BytesPerSecond > 0 {
			w.note("throttle")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write sends p in pieces that end where a fault is due.
func (w *faultWriter) Write(b []byte) (int, error) {
	if !w.headerDone {
		w.WriteHeader(http.StatusOK)
	}
	if w.cut {
		return 0, errCut
	}
	if !w.body {
		return w.ResponseWriter.Write(b)
	}
	written := 0
	for len(b) > 0 {
		select {
		case <-w.down:
			w.cutHere(Reset, "down")
			return written, errCut
		default:
		}
		if w.f.Hold != nil && !w.held && w.sent >= w.f.HoldAt {
			w.held = true
			w.note("hold@" + strconv.FormatInt(w.sent, 10))
			w.Flush()
			select {
			case <-w.f.Hold:
			case <-w.done:
				return written, errCut
			case <-w.down:
				w.cutHere(Reset, "down")
				return written, errCut
			}
		}
		if w.cutAt >= 0 && w.sent >= w.cutAt {
			w.cutHere(w.f.Cut, string(w.f.Cut)+"@"+strconv.FormatInt(w.sent, 10))
			return written, errCut
		}
		n := int64(len(b))
		for _, at := range []int64{w.cutAt, w.flipAt} {
			if at > w.sent && at-w.sent < n {
				n = at - w.sent
			}
		}
		if w.f.Hold != nil && !w.held && w.f.HoldAt-w.sent < n {
			n = w.f.HoldAt - w.sent
		}
		if w.f.BytesPerSecond > 0 {
			n = min(n, max(w.f.BytesPerSecond/20, 1)) // about 20 writes a second
		}
		piece := b[:n]
		if w.flipAt >= w.sent && w.flipAt < w.sent+n {
			piece = append([]byte(nil), piece...)
			piece[w.flipAt-w.sent] ^= 1
			w.note("flip@" + strconv.FormatInt(w.flipAt, 10))
		}
		m, err := w.ResponseWriter.Write(piece)
		w.sent += int64(m)
		written += m
		sent := w.sent
		w.p.update(func() { w.seen.Sent = sent })
		if err != nil {
			return written, err
		}
		b = b[n:]
		if w.f.BytesPerSecond > 0 {
			w.Flush()
			select {
			case <-time.After(time.Duration(n) * time.Second / time.Duration(w.f.BytesPerSecond)):
			case <-w.done:
				return written, errCut
			}
		}
	}
	return written, nil
}

// cutHere ends the body where it stands.
func (w *faultWriter) cutHere(how Cut, what string) {
	w.cut = true
	w.note(what)
	abort(w.ResponseWriter, how, true)
}

func (w *faultWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.cut {
		f.Flush()
	}
}

// control serves the /-/faulty/ paths.
func (p *Proxy) control(w http.ResponseWriter, r *http.Request) {
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /-/faulty/rules":
		p.mu.Lock()
		rules := make([]Rule, len(p.rules))
		for i, r := range p.rules {
			rules[i] = *r
		}
		p.mu.Unlock()
		reply(rules)
	case "POST /-/faulty/rules":
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var rules []Rule
		if err := json.Unmarshal(body, &rules); err != nil {
			var one Rule
			if err := json.Unmarshal(body, &one); err != nil {
				http.Error(w, "want a JSON rule or array of rules: "+err.Error(), http.StatusBadRequest)
				return
			}
			rules = []Rule{one}
		}
		p.Add(rules...)
		w.WriteHeader(http.StatusNoContent)
	case "DELETE /-/faulty/rules":
		p.Clear()
		w.WriteHeader(http.StatusNoContent)
	case "GET /-/faulty/log":
		reply(p.Log())
	case "DELETE /-/faulty/log":
		p.ResetLog()
		w.WriteHeader(http.StatusNoContent)
	case "PUT /-/faulty/down":
		p.SetDown(true)
		w.WriteHeader(http.StatusNoContent)
	case "DELETE /-/faulty/down":
		p.SetDown(false)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}
