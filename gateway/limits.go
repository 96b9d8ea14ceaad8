package gateway

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"

	"github.com/dockyard/dockyard/oci"
)

// What a hostile or broken client may hold of the server is bounded: its connections
// (in all and per address), how long it may take to send a request's headers, a
// small body, or the next bytes of a blob, how large its headers and small bodies may
// be, and how often it may call the costly endpoints.

// Limits are the live bounds on clients (a reload changes them).
type Limits struct {
	// MaxConns bounds the open connections; MaxConnsPerIP those from one address (an
	// IPv6 /64), trusted proxies excepted: they carry many clients. 0: no limit.
	MaxConns, MaxConnsPerIP int
	// MaxBodySize bounds the body of a request other than a blob upload or a manifest
	// (which has MaxManifestSize). 0: DefaultMaxBodySize.
	MaxBodySize int64
	// RatePerSecond and RateBurst are a token bucket per client address for the
	// catalog, search, the token endpoint and password checks. RatePerSecond 0: no
	// limit.
	RatePerSecond float64
	RateBurst     int
}

// DefaultMaxBodySize is Limits.MaxBodySize when unset.
const DefaultMaxBodySize = 1 << 20

// Connections over a limit are answered and closed in the accept loop. The answer is
// written, the sending side shut and what the client sent read and dropped for a
// moment, so that its request does not make the kernel reset the connection before
// the answer is read; at most maxRefusalsLingering at a time do so, the others are
// answered and closed at once.
const (
	maxRefusalsLingering = 64
	refusalLinger        = time.Second
	// refusalRetryAfter is the Retry-After of a refused connection, in seconds.
	refusalRetryAfter = "5"
)

// admission counts the open connections, in all and per client address.
type admission struct {
	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int

	lingering atomic.Int32
	// lastLog is when a refusal was last logged (UnixNano); refusals are logged at
	// most once a minute, with how many there were since.
	lastLog atomic.Int64
	since   atomic.Int64
}

func newAdmission() *admission { return &admission{perIP: map[netip.Prefix]int{}} }

// open is the number of open connections.
func (a *admission) open() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// limitListener admits the connections its gateway's limits allow.
type limitListener struct {
	net.Listener
	g *Gateway
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.g.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c in, or refuses it (nil) when it is over a limit.
func (g *Gateway) admit(c net.Conn) net.Conn {
	a, live := g.admission, g.current.Load()
	peer := addrOf(c.RemoteAddr())
	// Every connection is counted, limited or not, so that a reload turning a limit
	// on finds the counts right.
	key, counted := addrKey(peer), !trustedIn(live, peer)
	a.mu.Lock()
	var refusal *oci.Error
	var limit string
	switch lim := live.Limits; {
	case lim.MaxConns > 0 && a.total >= lim.MaxConns:
		limit = "max_conns"
		refusal = oci.ErrTooManyConns.Withf("the registry has %d connections open, the most it takes (http.max_conns); try again shortly", a.total)
	case counted && lim.MaxConnsPerIP > 0 && a.perIP[key] >= lim.MaxConnsPerIP:
		limit = "max_conns_per_ip"
		refusal = oci.ErrTooManyRequests.Withf("%s has %d connections open, the most one address may have (http.max_conns_per_ip)", peer, a.perIP[key])
	default:
		a.total++
		if counted {
			a.perIP[key]++
		}
	}
	a.mu.Unlock()
	if refusal != nil {
		g.refuse(c, peer, limit, refusal)
		return nil
	}
	lc := &limitedConn{Conn: c, a: a, key: key, counted: counted, writeStall: g.opts.WriteTimeout}
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp finds TLS (the handshake, IsTLS) by these methods.
		return &limitedTLSConn{limitedConn: lc, tls: tc, headersBy: time.Now().Add(g.opts.HeaderTimeout)}
	}
	return lc
}

func (a *admission) release(key netip.Prefix, counted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if counted {
		if a.perIP[key]--; a.perIP[key] <= 0 {
			delete(a.perIP, key)
		}
	}
}

// refuse answers a connection over a limit and closes it. Over TLS, before any
// handshake, it is only closed.
func (g *Gateway) refuse(c net.Conn, peer netip.Addr, limit string, e *oci.Error) {
	a := g.admission
	if g.metrics != nil {
		g.metrics.refused.WithLabelValues(limit).Inc()
	}
	a.since.Add(1)
	if last := a.lastLog.Load(); time.Since(time.Unix(0, last)) > time.Minute && a.lastLog.CompareAndSwap(last, time.Now().UnixNano()) {
		g.log.Warn("connections refused: over a connection limit", "limit", "http."+limit, "remote", peer.String(),
			"refused_since_last_warning", a.since.Swap(0))
	}
	if _, ok := c.(*tls.Conn); ok {
		c.Close()
		return
	}
	e.RetryAfter = refusalRetryAfter
	answer := rawErrorResponse(e)
	if a.lingering.Add(1) > maxRefusalsLingering {
		a.lingering.Add(-1)
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)) // a new connection's buffer takes it at once
		c.Write(answer)
		c.Close()
		return
	}
	go func() {
		defer a.lingering.Add(-1)
		c.SetDeadline(time.Now().Add(refusalLinger))
		if _, err := c.Write(answer); err == nil {
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		}
		c.Close()
	}()
}

// rawErrorResponse is a whole HTTP response carrying e, for a connection no handler
// serves.
func rawErrorResponse(e *oci.Error) []byte {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: e.Message}}})
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
		e.Code.Status, fasthttp.StatusMessage(e.Code.Status), len(body))
	if e.RetryAfter != "" {
		head += "Retry-After: " + e.RetryAfter + "\r\n"
	}
	return append([]byte(head+"\r\n"), body...)
}

// limitedConn is an admitted connection: closing it lets its place go. Each write
// to it must make progress within writeStall: a client that stops taking a response
// (pipelined requests whose answers it never reads, a blob it never reads) is cut off
// then, while one reading a large blob slowly but steadily is not.
type limitedConn struct {
	net.Conn
	a          *admission
	key        netip.Prefix
	counted    bool
	once       sync.Once
	writeStall time.Duration
	// writeDeadline is a write deadline set from outside (UnixNano; 0: none): the
	// writes' own never go past it.
	writeDeadline atomic.Int64
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.a.release(c.key, c.counted) })
	return c.Conn.Close()
}

func (c *limitedConn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *limitedConn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *limitedConn) setWriteDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.writeDeadline.Store(ns)
}

// armWrite gives the next write writeStall, within a deadline set from outside.
func (c *limitedConn) armWrite() {
	d := time.Now().Add(c.writeStall)
	if ns := c.writeDeadline.Load(); ns != 0 && ns < d.UnixNano() {
		d = time.Unix(0, ns)
	}
	c.Conn.SetWriteDeadline(d)
}

// again reports whether a write that ended with err after n bytes goes on: it timed
// out having made progress, before any deadline set from outside. (Over TLS a write
// that timed out breaks the connection: the next fails at once.)
func (c *limitedConn) again(n int64, err error) bool {
	var ne net.Error
	if n == 0 || !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	ns := c.writeDeadline.Load()
	return ns == 0 || time.Now().UnixNano() < ns
}

func (c *limitedConn) Write(p []byte) (int, error) {
	n := 0
	for {
		c.armWrite()
		m, err := c.Conn.Write(p[n:])
		n += m
		if err == nil || !c.again(int64(m), err) {
			return n, err
		}
	}
}

// ReadFrom keeps the connection's own for files (sendfile for blob files: fasthttp
// writes file bodies through it), which goes on from where a write that timed out
// stopped; anything else goes through Write.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok || !isFile(r) {
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	var n int64
	for {
		c.armWrite()
		m, err := rf.ReadFrom(r)
		n += m
		if err == nil || !c.again(m, err) {
			return n, err
		}
	}
}

// isFile reports whether r is a file, or a part of one: sendfile moves its offset
// past what it sent, so a ReadFrom cut short loses nothing.
func isFile(r io.Reader) bool {
	if lr, ok := r.(*io.LimitedReader); ok {
		r = lr.R
	}
	_, ok := r.(*os.File)
	return ok
}

// CloseWrite shuts the sending side (lingeringClose).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// limitedTLSConn is an admitted TLS connection. Its handshake and first request's
// headers share the header timeout from its opening: fasthttp gives each of them the
// whole of it, so read deadlines are clamped to headersBy until the first one after
// the handshake.
type limitedTLSConn struct {
	*limitedConn
	tls        *tls.Conn
	headersBy  time.Time
	handshaken atomic.Bool
	headersSet atomic.Bool
}

func (c *limitedTLSConn) Handshake() error {
	defer c.handshaken.Store(true)
	return c.tls.Handshake()
}

func (c *limitedTLSConn) SetReadDeadline(t time.Time) error {
	if !c.headersSet.Load() {
		if c.handshaken.Load() {
			c.headersSet.Store(true)
		}
		if t.IsZero() || t.After(c.headersBy) {
			t = c.headersBy
		}
	}
	return c.limitedConn.SetReadDeadline(t)
}

func (c *limitedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// addrKey is what per-address limits count by: an IPv4 address, or the /64 an IPv6
// address is in (one site's, which may use any address in it).
func addrKey(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := a.BitLen()
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// rateLimiter keeps a token bucket per client: at most maxRateBuckets of them. When
// full, buckets that are full again (idle clients, as good as new) are dropped, and if
// that is not enough, an eighth of them at random.
type rateLimiter struct {
	mu      sync.Mutex
	per     float64
	burst   int
	buckets map[netip.Prefix]*rate.Limiter
}

const maxRateBuckets = 1 << 16

// allow takes one request of client from its bucket under the rate given; when empty
// it says how long until the next is allowed. A change of rate (a reload) starts every
// bucket afresh.
func (r *rateLimiter) allow(client netip.Prefix, per float64, burst int, now time.Time) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buckets == nil || per != r.per || burst != r.burst {
		r.per, r.burst, r.buckets = per, burst, map[netip.Prefix]*rate.Limiter{}
	}
	b := r.buckets[client]
	if b == nil {
		if len(r.buckets) >= maxRateBuckets {
			r.sweep(now)
		}
		b = rate.NewLimiter(rate.Limit(per), burst)
		r.buckets[client] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	return false, time.Duration((1 - b.TokensAt(now)) / per * float64(time.Second))
}

func (r *rateLimiter) sweep(now time.Time) {
	for k, b := range r.buckets {
		if b.TokensAt(now) >= float64(r.burst) {
			delete(r.buckets, k)
		}
	}
	for k := range r.buckets {
		if len(r.buckets) < maxRateBuckets-maxRateBuckets/8 {
			break
		}
		delete(r.buckets, k)
	}
}

// limitRate answers 429 TOOMANYREQUESTS, with Retry-After, to a client over its rate
// of costly requests (route names it for the metrics).
func (g *Gateway) limitRate(ctx *fasthttp.RequestCtx, route string) error {
	lim := g.live(ctx).Limits
	if lim.RatePerSecond <= 0 {
		return nil
	}
	client := g.clientIP(ctx)
	ok, wait := g.rates.allow(addrKey(client), lim.RatePerSecond, lim.RateBurst, time.Now())
	if ok {
		return nil
	}
	if g.metrics != nil {
		g.metrics.rateLimited.WithLabelValues(route).Inc()
	}
	name := "an unknown client"
	if client.IsValid() {
		name = client.String()
	}
	e := oci.ErrTooManyRequests.Withf("%s is over its rate of catalog, search, token requests and logins (%g a second, %d at once: http.rate_limit); retry later",
		name, lim.RatePerSecond, lim.RateBurst)
	e.RetryAfter = strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
	return e
}

// checkBodySize refuses, before it is read, a body over http.max_body_size on a
// request other than a blob upload or a manifest. (A chunked body declares no size:
// the handlers that read one bound what they read, and fasthttp drops at most 256 KiB
// of an unread one before closing the connection.)
func (g *Gateway) checkBodySize(ctx *fasthttp.RequestCtx) error {
	n := int64(ctx.Request.Header.ContentLength())
	limit := g.live(ctx).Limits.MaxBodySize
	if limit <= 0 {
		limit = DefaultMaxBodySize
	}
	if n <= limit {
		return nil
	}
	if r, err := ParseRoute(string(ctx.URI().PathOriginal())); err == nil && (endpoints[r.Kind].upload || r.Kind == KindManifest) {
		return nil
	}
	return oci.ErrBodyTooLarge.Withf("the request body is %d bytes; requests other than blob uploads and manifests may send at most %d (http.max_body_size)", n, limit)
}

// uploadRead is the body of a blob upload its caller may make (allowUpload): read
// until the upload timeout, each read under the read timeout, so that a client that
// stops sending is cut off after the read timeout rather than at the end of the
// upload's.
type uploadRead struct {
	r            io.Reader
	c            net.Conn
	stall, whole time.Duration
	end          time.Time
	stalled      bool
}

const uploadKey = "dockyard.upload"

// allowUpload gives the rest of an authorised upload's body the upload timeout.
func (g *Gateway) allowUpload(ctx *fasthttp.RequestCtx) {
	ctx.SetUserValue(uploadKey, &uploadRead{stall: g.opts.ReadTimeout, whole: g.opts.UploadTimeout, end: time.Now().Add(g.opts.UploadTimeout)})
}

// uploadBody is the request's blob data: under the upload's timeouts when the upload
// is allowed, else (never read: the request is refused first) under the read timeout.
func (g *Gateway) uploadBody(ctx *fasthttp.RequestCtx) io.Reader {
	u, _ := ctx.UserValue(uploadKey).(*uploadRead)
	if u == nil {
		return ctx.RequestBodyStream()
	}
	u.r, u.c = ctx.RequestBodyStream(), ctx.Conn()
	return u
}

func (u *uploadRead) Read(p []byte) (int, error) {
	deadline := time.Now().Add(u.stall)
	last := !deadline.Before(u.end)
	if last {
		deadline = u.end
	}
	u.c.SetReadDeadline(deadline)
	n, err := u.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		u.stalled = true
		if last {
			return n, oci.ErrRequestTimeout.Withf("the upload's body did not arrive within %s (http.upload_timeout)", u.whole)
		}
		return n, oci.ErrRequestTimeout.Withf("the upload's body stalled: nothing came for %s (http.read_timeout)", u.stall)
	}
	return n, err
}

// stalled reports whether the request's upload body stopped coming: there is nothing
// to drain, the connection is closed after the answer.
func stalled(ctx *fasthttp.RequestCtx) bool {
	u, _ := ctx.UserValue(uploadKey).(*uploadRead)
	return u != nil && u.stalled
}

// transportError answers what fasthttp could not read as a request: headers over
// http.max_header_size, a request that did not arrive in time, or something that is
// not HTTP. (fasthttp closes the connection after it.)
func (g *Gateway) transportError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	var e *oci.Error
	switch {
	case errors.As(err, &small):
		e = oci.ErrHeadersTooLarge.Withf("the request line and headers are over %d bytes (http.max_header_size)", g.server.ReadBufferSize)
	case errors.As(err, &ne) && ne.Timeout():
		e = oci.ErrRequestTimeout.Withf("the request did not arrive in time: its headers within %s (http.header_timeout), the first bytes of its body within %s (http.read_timeout)",
			g.opts.HeaderTimeout, g.opts.ReadTimeout)
	default:
		e = oci.ErrMalformedRequest.Withf("the request could not be read as HTTP/1.1")
	}
	setRawError(ctx, e)
}

// setRawError makes e the response of a request no handler serves.
func setRawError(ctx *fasthttp.RequestCtx, e *oci.Error) {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: e.Message}}})
	ctx.Response.Reset()
	ctx.SetStatusCode(e.Code.Status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Docker-Distribution-API-Version", "registry/2.0")
	ctx.SetBody(body)
}

// expect answers a request that asks before sending its body (Expect: 100-continue):
// one the size limits would refuse is answered 413 at once, never invited to send it
// (fasthttp closes the connection after); others are invited.
func (g *Gateway) expect(ctx *fasthttp.RequestCtx) int {
	err := g.checkBodySize(ctx)
	if err == nil {
		err = g.checkManifestSize(ctx)
	}
	e, ok := oci.AsError(err)
	if !ok {
		return fasthttp.StatusContinue
	}
	setRawError(ctx, e)
	return e.Code.Status
}

// trustedIn reports whether a is one of l's trusted proxies.
func trustedIn(l *Live, a netip.Addr) bool {
	for _, p := range l.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
