// Package upstream owns dockyard's conversations with upstream registries: one Client
// per proxied registry, with its credentials, TLS settings and timeouts, speaking the
// distribution API through go-containerregistry's transport (which handles Basic auth
// and the Bearer token challenge flow). It fetches and reports; it never writes to
// local storage.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/dockyard/dockyard/oci"
)

// Config describes one upstream registry.
type Config struct {
	URL      string
	Username string
	Password string
	CAFile   string
	Insecure bool // skip TLS verification
	// Timeout bounds connecting, TLS, waiting for response headers, any pause while a
	// body is being received, and the whole of a manifest's body.
	Timeout time.Duration
	// Retry bounds the retries of what failed in passing (zero fields: the defaults).
	Retry Retry
}

// Retry says how the client retries what failed in passing. The client only reads
// (GET and HEAD), so a retry is always safe. Retried: a connection cut before the
// answer (not a refused one, nor a timeout: an upstream that said nothing for Timeout
// is not asked again while clients wait); 429 and 503, after their Retry-After when it
// is within MaxRetryAfter (a longer one is passed on at once), else after a backoff;
// 502 and 504; a manifest cut short or not matching its digest; and a blob body cut
// short or stalled, which resumes with a Range request from the byte reached.
type Retry struct {
	// Attempts bounds the requests made for one answer, the first included. A blob
	// download counts each of its resumes, and starts the count over from each
	// response that brought at least ResumeProgress bytes of it: it makes at most
	// Attempts × (1 + size/ResumeProgress) requests in all.
	Attempts int
	// Backoff is the wait before the second attempt, doubled for each next one up to
	// MaxBackoff, less up to half at random.
	Backoff, MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After waited for.
	MaxRetryAfter time.Duration
	// Sleep waits d, or until ctx ends (tests record the waits instead).
	Sleep func(ctx context.Context, d time.Duration) error
}

// The retry defaults: a client's request waits at most about 3 × MaxRetryAfter.
const (
	DefaultAttempts      = 4
	DefaultBackoff       = 200 * time.Millisecond
	DefaultMaxBackoff    = 2 * time.Second
	DefaultMaxRetryAfter = 5 * time.Second
)

// ResumeProgress is the progress that refills a blob download's attempts: an upstream
// that cuts every response but moves the download on by this much each time is
// followed to the end; one that trickles less per response fails within Attempts.
const ResumeProgress = 64 << 10

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultAttempts
	}
	if r.Backoff <= 0 {
		r.Backoff = DefaultBackoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = DefaultMaxBackoff
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Client talks to one upstream registry.
type Client struct {
	base     *url.URL
	registry name.Registry
	auth     authn.Authenticator
	inner    http.RoundTripper
	timeout  time.Duration
	retry    Retry
	hub      bool // Docker Hub: official images live under library/

	transports *lru.Cache[string, http.RoundTripper] // authenticated, per repository scope
	stats      *Stats
}

// Stats count a client's traffic with its upstream (metrics).
type Stats struct {
	// Requests are HTTP round trips (token requests included); Errors those that failed
	// to connect or were answered 429 or 5xx; Bytes the response body bytes read.
	Requests, Errors, Bytes atomic.Int64
	// Retries are requests made again after a failure in passing; Resumes the
	// requests that continued a blob download cut short (with a Range request where
	// the upstream supports it).
	Retries, Resumes atomic.Int64
}

// CloseIdle closes the client's idle connections to the upstream (its proxy is gone).
func (c *Client) CloseIdle() {
	if t, ok := c.inner.(countingTransport); ok {
		if h, ok := t.inner.(*http.Transport); ok {
			h.CloseIdleConnections()
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() *Stats { return c.stats }

// countingTransport counts round trips, failures and body bytes, those of the hosts
// the upstream redirects to (a CDN) and of its token service included. For an http://
// upstream, go-containerregistry first tries https (its ping, GET https://HOST/v2/,
// before falling back): that probe is not the upstream's traffic and is not counted.
type countingTransport struct {
	inner http.RoundTripper
	stats *Stats
	probe *url.URL // the https ping of an http:// upstream; nil for an https:// one
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if p := t.probe; p != nil && req.URL.Scheme == p.Scheme && req.URL.Host == p.Host && req.URL.Path == p.Path {
		return t.inner.RoundTrip(req)
	}
	t.stats.Requests.Add(1)
	resp, err := t.inner.RoundTrip(req)
	if err != nil || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		t.stats.Errors.Add(1)
	}
	if err == nil && resp.Body != nil {
		resp.Body = CountingBody(resp.Body, &t.stats.Bytes)
	}
	return resp, err
}

// CountingBody adds the bytes read from body to n.
func CountingBody(body io.ReadCloser, n *atomic.Int64) io.ReadCloser {
	return &countingBody{ReadCloser: body, n: n}
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// New prepares a client; it does not contact the upstream.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: must be http(s)://host[:port]", cfg.URL)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %w", cfg.URL, err)
	}
	tlsConfig := &tls.Config{InsecureSkipVerify: cfg.Insecure}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA file %s holds no certificate", cfg.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	inner := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   64,
		ForceAttemptHTTP2:     true,
	}
	var auth authn.Authenticator = authn.Anonymous
	if cfg.Username != "" {
		auth = &authn.Basic{Username: cfg.Username, Password: cfg.Password}
	}
	transports, _ := lru.New[string, http.RoundTripper](1024)
	stats := &Stats{}
	counting := countingTransport{inner: inner, stats: stats}
	if u.Scheme == "http" {
		counting.probe = &url.URL{Scheme: "https", Host: reg.RegistryStr(), Path: "/v2/"}
	}
	return &Client{
		base: u, registry: reg, auth: auth, inner: counting, timeout: cfg.Timeout,
		retry:      cfg.Retry.withDefaults(),
		hub:        strings.HasSuffix(u.Host, "docker.io"),
		transports: transports, stats: stats,
	}, nil
}

// Host is the upstream's host[:port], as clients name it (for the ns parameter).
func (c *Client) Host() string { return c.base.Host }

// upstreamRepo maps a repository name to the upstream's: on Docker Hub, official
// images are library/<name>.
func (c *Client) upstreamRepo(repo string) string {
	if c.hub && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

// transport returns a round tripper authorised to pull repo, doing the upstream's
// auth handshake the first time.
func (c *Client) transport(ctx context.Context, repo string) (http.RoundTripper, error) {
	if t, ok := c.transports.Get(repo); ok {
		return t, nil
	}
	scope := "repository:" + repo + ":pull"
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t, err := transport.NewWithContext(ctx, c.registry, c.auth, c.inner, []string{scope})
	if err != nil {
		return nil, err
	}
	c.transports.Add(repo, t)
	return t, nil
}

// Manifest is a manifest as the upstream serves it.
type Manifest struct {
	Digest    oci.Digest
	MediaType string
	Size      int64
	Content   []byte // nil for HEAD
}

var acceptManifests = strings.Join([]string{oci.MediaTypeOCIIndex, oci.MediaTypeOCIManifest,
	oci.MediaTypeDockerList, oci.MediaTypeDockerManifest}, ", ")

// HeadManifest resolves ref (a tag or digest) without downloading the manifest. The
// digest is empty when the upstream does not send Docker-Content-Digest.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	resp, err := c.do(ctx, "HEAD", repo, "/manifests/"+ref, acceptManifests)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	m := &Manifest{MediaType: mediaType(resp), Size: resp.ContentLength}
	if d, err := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
		m.Digest = d
	}
	return m, nil
}

// maxManifest bounds what is read of an upstream manifest.
const maxManifest = 8 << 20

// GetManifest downloads ref and verifies its bytes: against the digest when ref is one,
// else against the Docker-Content-Digest header when the upstream sends one. A body
// cut short or not matching is downloaded again, within the retry budget.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	b := c.newBudget()
	for {
		m, again, err := c.getManifest(ctx, b, repo, ref)
		if err == nil || !again || b.left <= 0 || ctx.Err() != nil {
			return m, err
		}
		c.stats.Retries.Add(1)
		if c.pause(ctx, b, 0) != nil {
			return nil, err
		}
	}
}

// getManifest is one download of a manifest; again says whether another may succeed.
func (c *Client) getManifest(ctx context.Context, b *budget, repo, ref string) (m *Manifest, again bool, err error) {
	resp, err := c.doWithin(ctx, b, "GET", repo, "/manifests/"+ref, acceptManifests, nil)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	// A manifest is a few KiB (maxManifest at most): its body must arrive within Timeout
	// of its headers, not merely without a pause that long, or an upstream trickling it
	// holds the request, and every one waiting for the same tag, for as long as it likes.
	// Running out of that time is not retried, as an answer later than Timeout is not.
	resp.Body.(*idleTimeoutBody).within(c.timeout)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, !errors.Is(err, errTooSlow), fmt.Errorf("%w: reading manifest %s: %v", ErrUnavailable, ref, err)
	}
	if len(body) > maxManifest {
		return nil, false, oci.ErrManifestInvalid.Withf("upstream manifest %s is over %d bytes", ref, maxManifest)
	}
	want := oci.Digest("")
	if d, err := oci.ParseDigest(ref); err == nil {
		want = d
	} else if d, err := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
		want = d
	}
	got := oci.FromBytes(oci.SHA256, body)
	if want != "" {
		if got = oci.FromBytes(want.Algorithm(), body); got != want {
			return nil, true, fmt.Errorf("%w: upstream manifest %s hashes to %s, expected %s", ErrCorrupt, ref, got, want)
		}
	}
	return &Manifest{Digest: got, MediaType: mediaType(resp), Size: int64(len(body)), Content: body}, false, nil
}

func mediaType(resp *http.Response) string {
	mt := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	return strings.TrimSpace(mt)
}

// HeadBlob returns a blob's size without downloading it.
func (c *Client) HeadBlob(ctx context.Context, repo string, d oci.Digest) (int64, error) {
	resp, err := c.do(ctx, "HEAD", repo, "/blobs/"+string(d), "")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// GetBlob starts downloading a blob; the caller verifies and closes it. ctx should be
// bound to no request, only to the proxy's lifetime: the download may be shared by many
// clients and outlive the one that started it. The upstream pausing longer than the
// timeout ends it too. A body cut short (or stalled) resumes where it stopped, within
// the retry budget: the reader sees one stream.
func (c *Client) GetBlob(ctx context.Context, repo string, d oci.Digest) (io.ReadCloser, int64, error) {
	b := c.newBudget()
	resp, err := c.doWithin(ctx, b, "GET", repo, "/blobs/"+string(d), "", nil)
	if err != nil {
		return nil, 0, err
	}
	return &blobBody{c: c, ctx: ctx, b: b, repo: repo, d: d, body: resp.Body, size: resp.ContentLength}, resp.ContentLength, nil
}

// blobBody is a blob download that resumes when its body breaks: with a Range request
// from the byte reached when the upstream answers 206 from there, else over again from
// the start, skipping what was already read.
type blobBody struct {
	c    *Client
	ctx  context.Context
	b    *budget
	repo string
	d    oci.Digest
	body io.ReadCloser
	size int64 // announced; -1 if unknown
	off  int64 // bytes read
	from int64 // off when body started
	// broken is the failure that ended body, when the next Read must resume; failed
	// ends the download (resuming failed).
	broken, failed error
}

func (r *blobBody) Read(p []byte) (int, error) {
	for {
		if r.failed != nil {
			return 0, r.failed
		}
		if r.broken != nil {
			if r.failed = r.resume(); r.failed != nil {
				return 0, r.failed
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if err == nil || r.size >= 0 && r.off >= r.size {
			if err != nil {
				err = io.EOF // the announced bytes are all here
			}
			return n, err
		}
		if err == io.EOF {
			if r.size < 0 {
				return n, err
			}
			err = fmt.Errorf("%w: %s ended after %d of %d bytes", ErrUnavailable, r.d, r.off, r.size)
		}
		r.broken = err
		if n > 0 {
			return n, nil
		}
	}
}

// resume replaces the broken body with the rest of the blob, or says why it cannot.
func (r *blobBody) resume() error {
	r.body.Close()
	if r.off-r.from >= ResumeProgress {
		r.b.refill(r.c.retry.Attempts)
	}
	ranged := true
	for {
		if r.b.left <= 0 || r.ctx.Err() != nil {
			return r.broken
		}
		if err := r.c.pause(r.ctx, r.b, 0); err != nil {
			return r.broken
		}
		r.c.stats.Resumes.Add(1)
		var h http.Header
		if ranged {
			h = http.Header{"Range": {"bytes=" + strconv.FormatInt(r.off, 10) + "-"}}
		}
		resp, err := r.c.doWithin(r.ctx, r.b, "GET", r.repo, "/blobs/"+string(r.d), "", h)
		if err != nil {
			return err
		}
		switch {
		case ranged && resp.StatusCode == http.StatusPartialContent:
			if !contentRangeFrom(resp.Header.Get("Content-Range"), r.off, r.size) {
				// Not the range asked for: start over.
				resp.Body.Close()
				ranged = false
				continue
			}
		case resp.StatusCode == http.StatusOK && (r.size < 0 || resp.ContentLength == r.size):
			// The whole blob again (Range ignored): skip what was read.
			if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
				resp.Body.Close()
				r.broken = err
				continue
			}
		default:
			resp.Body.Close()
			return fmt.Errorf("%w: resuming %s at byte %d: upstream answered %s, Content-Length %d, Content-Range %q",
				ErrUnavailable, r.d, r.off, resp.Status, resp.ContentLength, resp.Header.Get("Content-Range"))
		}
		r.body, r.broken, r.from = resp.Body, nil, r.off
		return nil
	}
}

// contentRangeFrom reports whether a 206's Content-Range ("bytes FIRST-LAST/SIZE")
// runs from off to the end of a blob of size bytes (-1: unknown).
func contentRangeFrom(h string, off, size int64) bool {
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return false
	}
	span, total, ok := strings.Cut(spec, "/")
	first, last, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return false
	}
	f, err1 := strconv.ParseInt(first, 10, 64)
	l, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || f != off {
		return false
	}
	if size < 0 {
		return total == "*" || total == strconv.FormatInt(l+1, 10)
	}
	return total == strconv.FormatInt(size, 10) && l == size-1
}

func (r *blobBody) Close() error { return r.body.Close() }

// Tags lists the upstream's tags of repo, one page.
func (c *Client) Tags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	path := "/tags/list"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.do(ctx, "GET", repo, path, "application/json")
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	var body struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body); err != nil {
		return nil, false, fmt.Errorf("%w: tag list: %v", ErrUnavailable, err)
	}
	return body.Tags, resp.Header.Get("Link") != "", nil
}

// Referrers lists the upstream's referrers of d in repo. An upstream without the
// referrers API answers with none.
func (c *Client) Referrers(ctx context.Context, repo string, d oci.Digest) ([]oci.Descriptor, error) {
	resp, err := c.do(ctx, "GET", repo, "/referrers/"+string(d), oci.MediaTypeOCIIndex)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var idx struct {
		Manifests []oci.Descriptor `json:"manifests"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifest)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("%w: referrers: %v", ErrUnavailable, err)
	}
	return idx.Manifests, nil
}

// budget is what is left of the attempts for one answer.
type budget struct{ made, left int }

func (c *Client) newBudget() *budget { return &budget{left: c.retry.Attempts} }

// refill counts the request that made progress as the first of a new budget (and its
// backoff starts over): the upstream moves on, its failures are in passing again.
func (b *budget) refill(attempts int) { b.made, b.left = 1, attempts-1 }

// do sends a request for repo, retried as Retry says, and returns a 2xx response, or
// an error: a *StatusError for answers the client should hear about, ErrUnavailable
// otherwise.
func (c *Client) do(ctx context.Context, method, repo, path, accept string) (*http.Response, error) {
	return c.doWithin(ctx, c.newBudget(), method, repo, path, accept, nil)
}

// doWithin is do, with extra request headers, spending the attempts of b.
func (c *Client) doWithin(ctx context.Context, b *budget, method, repo, path, accept string, header http.Header) (*http.Response, error) {
	for {
		b.made++
		b.left--
		resp, retry, err := c.send(ctx, method, repo, path, accept, header)
		if err == nil {
			return resp, nil
		}
		if !retry.again || b.left <= 0 || ctx.Err() != nil {
			return nil, err
		}
		c.stats.Retries.Add(1)
		if c.pause(ctx, b, retry.after) != nil {
			return nil, err
		}
	}
}

// pause waits before another attempt: after, when the upstream asked for it, else the
// backoff.
func (c *Client) pause(ctx context.Context, b *budget, after time.Duration) error {
	d := after
	if d <= 0 {
		d = c.retry.Backoff << min(b.made-1, 20)
		if d > c.retry.MaxBackoff || d <= 0 {
			d = c.retry.MaxBackoff
		}
		d -= rand.N(d/2 + 1)
	}
	return c.retry.Sleep(ctx, d)
}

// retryAdvice says whether a failure may pass, and after how long the upstream asked
// to be asked again (0: it did not say).
type retryAdvice struct {
	again bool
	after time.Duration
}

// send makes one request.
func (c *Client) send(ctx context.Context, method, repo, path, accept string, header http.Header) (*http.Response, retryAdvice, error) {
	repo = c.upstreamRepo(repo)
	t, err := c.transport(ctx, repo)
	if err != nil {
		return nil, retryAdvice{again: c.transient(ctx, err)}, c.classify(err)
	}
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + "/v2/" + repo + path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Path = strings.TrimSuffix(c.base.Path, "/") + "/v2/" + repo + path[:i]
		u.RawQuery = path[i+1:]
	}
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, method, u.String(), nil)
	if err != nil {
		cancel()
		return nil, retryAdvice{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		cancel()
		return nil, retryAdvice{again: c.transient(ctx, err)}, c.classify(err) // ctx: the caller's, not the request's
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		return nil, c.transientStatus(resp), c.statusError(resp)
	}
	resp.Body = newIdleTimeoutBody(resp.Body, c.timeout, cancel)
	return resp, retryAdvice{}, nil
}

// transient reports whether a failed round trip may pass: the connection was cut
// before the answer, or the auth handshake was answered 429, 502, 503 or 504. Not a
// refused connection (nobody listens) nor a timeout (the wait was Timeout already).
func (c *Client) transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusBadGateway ||
			te.StatusCode == http.StatusServiceUnavailable || te.StatusCode == http.StatusGatewayTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// transientStatus reports whether an answer may change if asked again, and after how
// long the upstream asked to be: 429 and 503 with a Retry-After within MaxRetryAfter
// (or none), 502 and 504.
func (c *Client) transientStatus(resp *http.Response) retryAdvice {
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		h := resp.Header.Get("Retry-After")
		if h == "" {
			return retryAdvice{again: true}
		}
		d, ok := parseRetryAfter(h, time.Now())
		if !ok {
			return retryAdvice{again: true} // unreadable: as if unsaid
		}
		return retryAdvice{again: d <= c.retry.MaxRetryAfter, after: d}
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return retryAdvice{again: true}
	}
	return retryAdvice{}
}

// maxRetryAfter bounds the waits read from Retry-After (12 days): a longer one is as
// long, not unreadable, so an upstream asking for the longest wait is not asked again
// at once.
const maxRetryAfter = (1 << 20) * time.Second

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	if n, err := strconv.ParseUint(strings.TrimSpace(h), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		return time.Duration(min(n, uint64(maxRetryAfter/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// retryAfter is a response's Retry-After when it is readable, to pass on.
func retryAfter(resp *http.Response) string {
	h := resp.Header.Get("Retry-After")
	if _, ok := parseRetryAfter(h, time.Now()); !ok {
		return ""
	}
	return strings.TrimSpace(h)
}

// ErrUnavailable means the upstream could not be asked: unreachable, timed out or
// failing (5xx). Callers serve what they have cached.
var ErrUnavailable = errors.New("upstream unavailable")

// ErrCorrupt means the upstream sent bytes that do not match their digest.
var ErrCorrupt = errors.New("upstream sent corrupt content")

// StatusError is a definite answer from the upstream (401, 403, 404, 429…).
// RetryAfter is the answer's Retry-After, when readable.
type StatusError struct {
	Status     int
	RetryAfter string
	Message    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered %d: %s", e.Status, e.Message)
}

// FailingError is a 5xx answer: the upstream is failing (it is ErrUnavailable).
// RetryAfter is the answer's Retry-After, when readable: a 503 may say when to come
// back.
type FailingError struct {
	Host, Status, RetryAfter string
}

func (e *FailingError) Error() string {
	return fmt.Sprintf("%v: %s answered %s", ErrUnavailable, e.Host, e.Status)
}

func (e *FailingError) Unwrap() error { return ErrUnavailable }

func (c *Client) statusError(resp *http.Response) error {
	if resp.StatusCode >= 500 {
		return &FailingError{Host: c.base.Host, Status: resp.Status, RetryAfter: retryAfter(resp)}
	}
	msg := resp.Status
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		msg = body.Errors[0].Code + ": " + body.Errors[0].Message
	}
	return &StatusError{Status: resp.StatusCode, RetryAfter: retryAfter(resp), Message: msg}
}

// classify turns a transport failure into ErrUnavailable, or into a StatusError when
// the upstream's token service gave a definite answer (bad credentials).
func (c *Client) classify(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode > 0 && te.StatusCode < 500 {
		return &StatusError{Status: te.StatusCode, Message: te.Error()}
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, c.base.Host, err)
}

// idleTimeoutBody cancels a download when the upstream sends nothing for a while, so a
// stalled upstream cannot hang a pull forever; and, when within set one, when the body
// has not all arrived by its deadline.
type idleTimeoutBody struct {
	io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelFunc

	deadline *time.Timer
	total    time.Duration
	expired  atomic.Bool
}

// errTooSlow is a body that did not all arrive within its deadline.
var errTooSlow = errors.New("body too slow")

// within cancels the download unless its body has all arrived d from now.
func (b *idleTimeoutBody) within(d time.Duration) {
	b.total = d
	b.deadline = time.AfterFunc(d, func() {
		b.expired.Store(true)
		b.cancel()
	})
}

func newIdleTimeoutBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) io.ReadCloser {
	return &idleTimeoutBody{ReadCloser: rc, timer: time.AfterFunc(idle, cancel), idle: idle, cancel: cancel}
}

func (b *idleTimeoutBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if b.expired.Load() {
			return n, fmt.Errorf("%w: %w: not received within %s", ErrUnavailable, errTooSlow, b.total)
		}
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return n, err
}

func (b *idleTimeoutBody) Close() error {
	b.timer.Stop()
	if b.deadline != nil {
		b.deadline.Stop()
	}
	b.cancel()
	return b.ReadCloser.Close()
}
