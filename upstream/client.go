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
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

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
	// Timeout bounds connecting, TLS, waiting for response headers, and any pause
	// while a body is being received.
	Timeout time.Duration
}

// Client talks to one upstream registry.
type Client struct {
	base     *url.URL
	registry name.Registry
	auth     authn.Authenticator
	inner    http.RoundTripper
	timeout  time.Duration
	hub      bool // Docker Hub: official images live under library/

	transports *lru.Cache[string, http.RoundTripper] // authenticated, per repository scope
	stats      *Stats
}

// Stats count a client's traffic with its upstream (metrics).
type Stats struct {
	// Requests are HTTP round trips (token requests included); Errors those that failed
	// to connect or were answered 429 or 5xx; Bytes the response body bytes read.
	Requests, Errors, Bytes atomic.Int64
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

// countingTransport counts round trips, failures and body bytes. For an http://
// upstream, go-containerregistry first tries https (its probe before falling back):
// those tries are not the upstream's traffic and are not counted.
type countingTransport struct {
	inner  http.RoundTripper
	stats  *Stats
	scheme string
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.scheme {
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
	return &Client{
		base: u, registry: reg, auth: auth, inner: countingTransport{inner, stats, u.Scheme}, timeout: cfg.Timeout,
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
		return nil, c.classify(err)
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
// else against the Docker-Content-Digest header when the upstream sends one.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	resp, err := c.do(ctx, "GET", repo, "/manifests/"+ref, acceptManifests)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading manifest %s: %v", ErrUnavailable, ref, err)
	}
	if len(body) > maxManifest {
		return nil, oci.ErrManifestInvalid.Withf("upstream manifest %s is over %d bytes", ref, maxManifest)
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
			return nil, fmt.Errorf("%w: upstream manifest %s hashes to %s, expected %s", ErrCorrupt, ref, got, want)
		}
	}
	return &Manifest{Digest: got, MediaType: mediaType(resp), Size: int64(len(body)), Content: body}, nil
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
// timeout ends it too.
func (c *Client) GetBlob(ctx context.Context, repo string, d oci.Digest) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, "GET", repo, "/blobs/"+string(d), "")
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

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

// do sends one request for repo and returns a 2xx response, or an error: a
// *StatusError for answers the client should hear about, ErrUnavailable otherwise.
func (c *Client) do(ctx context.Context, method, repo, path, accept string) (*http.Response, error) {
	repo = c.upstreamRepo(repo)
	t, err := c.transport(ctx, repo)
	if err != nil {
		return nil, err
	}
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + "/v2/" + repo + path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Path = strings.TrimSuffix(c.base.Path, "/") + "/v2/" + repo + path[:i]
		u.RawQuery = path[i+1:]
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		cancel()
		return nil, c.classify(err)
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		return nil, c.statusError(resp)
	}
	resp.Body = newIdleTimeoutBody(resp.Body, c.timeout, cancel)
	return resp, nil
}

// ErrUnavailable means the upstream could not be asked: unreachable, timed out or
// failing (5xx). Callers serve what they have cached.
var ErrUnavailable = errors.New("upstream unavailable")

// ErrCorrupt means the upstream sent bytes that do not match their digest.
var ErrCorrupt = errors.New("upstream sent corrupt content")

// StatusError is a definite answer from the upstream (401, 403, 404, 429…).
type StatusError struct {
	Status     int
	RetryAfter string
	Message    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered %d: %s", e.Status, e.Message)
}

func (c *Client) statusError(resp *http.Response) error {
	if resp.StatusCode >= 500 {
		return fmt.Errorf("%w: %s answered %s", ErrUnavailable, c.base.Host, resp.Status)
	}
	msg := resp.Status
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		msg = body.Errors[0].Code + ": " + body.Errors[0].Message
	}
	return &StatusError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Message: msg}
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
// stalled upstream cannot hang a pull forever.
type idleTimeoutBody struct {
	io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelFunc
}

func newIdleTimeoutBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) io.ReadCloser {
	return &idleTimeoutBody{ReadCloser: rc, timer: time.AfterFunc(idle, cancel), idle: idle, cancel: cancel}
}

func (b *idleTimeoutBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return n, err
}

func (b *idleTimeoutBody) Close() error {
	b.timer.Stop()
	b.cancel()
	return b.ReadCloser.Close()
}
