package main

// dockyard import copies another registry (Nexus, Harbor, a CNCF registry, another
// dockyard…) into a running dockyard.
//
// It goes through dockyard's V2 API, as any client does, and never opens the store:
//   - it works while dockyard serves (the store's Badger index admits one process);
//   - it works on every index (Badger, PostgreSQL) and blob store (disk, S3), on a
//     cluster behind its balancer, and from any machine that can reach both registries;
//   - the destination's own rules apply to what arrives: authentication and
//     authorisation, immutable releases, manifest validation, reference counting,
//     referrers, quotas. Nothing can be imported that a push could not have made.
//
// What is copied: every tag of every repository of the source's catalog (or of the
// repositories named), each with what it needs — an image's config and layers, an
// index's children first — and everything that refers to it (signatures, SBOMs,
// attestations: the referrers API, or the referrers tag schema `sha256-<hex>` on a
// source without it, which go-containerregistry falls back to). Manifests are copied
// as the source's raw bytes with their media type, never re-serialised, so every
// digest is the source's. Blobs stream from the source into the upload; nothing is
// buffered whole.
//
// Resuming: everything is content-addressed and whatever the destination already has
// is skipped (a tag whose digest there equals the source's; blobs and manifests by an
// existence check), and a tag is pushed last, after its blobs, children and
// referrers. So an import killed at any point leaves no tag pointing at something
// incomplete, and running the same command again copies only what is missing. Upload
// sessions a failure or an interruption leaves open are cancelled (dockyard counts a
// client's open sessions); only a kill -9 leaves them to dockyard's upload purging.
// A tag the destination has with another digest is left alone unless --overwrite.
//
// The source is not trusted: the names it lists are validated as repository and tag
// names and must land under --into; its pages must move forward, within bounds; a
// body that stops sending fails its image after --timeout.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/upstream"
)

const importUsage = `usage: dockyard import --from URL [--username U --password-file F]
         [--repositories GLOB]… [--tags REGEXP]… [--to URL] [--into [HOST][/NAMESPACE]]
         [--to-username U --to-password-file F] [--concurrency N (at most 16)] [--timeout D]
         [--overwrite] [--insecure] [--ca-file F]`

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// importCommand: dockyard import --from URL … (see importUsage and the README).
func importCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	from := fs.String("from", "", "the source registry: http(s)://host[:port][/path] (a path for Nexus' path-based routing)")
	username := fs.String("username", "", "the source's user (without it: the docker config's credentials for the host, else anonymous)")
	passwordFile := fs.String("password-file", "", "a file holding the source user's password (never on the command line)")
	to := fs.String("to", "http://127.0.0.1:5000", "where dockyard listens")
	into := fs.String("into", "", "the destination as clients name it: HOST (a Host routed to the registry), HOST/NAMESPACE or NAMESPACE (a namespace route, prefixed to every repository); empty: --to's host")
	toUsername := fs.String("to-username", "", "dockyard's user (without it: the docker config's credentials, else anonymous)")
	toPasswordFile := fs.String("to-password-file", "", "a file holding dockyard's user's password")
	var repoGlobs, tagPatterns stringList
	fs.Var(&repoGlobs, "repositories", "import only repositories matching this glob (* within a component, ** across; repeatable); literal names need no catalog")
	fs.Var(&tagPatterns, "tags", "import only tags matching this regular expression, anchored at both ends (repeatable)")
	concurrency := fs.Int("concurrency", 4, fmt.Sprintf("images copied at once (at most %d: each uploads up to %d blobs at once, and dockyard admits 256 open uploads per client by default)", maxConcurrency, jobsPerImage))
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for a response's headers, and for each next byte of its body, before failing the image")
	insecure := fs.Bool("insecure", false, "skip TLS certificate verification (both registries)")
	caFile := fs.String("ca-file", "", "an extra CA certificate (PEM) to trust (both registries)")
	overwrite := fs.Bool("overwrite", false, "move a tag the destination has with another digest to the source's (without it: kept, and listed)")
	pageSize := fs.Int("page-size", 100, "entries asked per catalog and tag list page")
	every := fs.Duration("progress-interval", 5*time.Second, "how often a progress line is printed when the output is not a terminal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("import: unexpected argument %q\n%s", fs.Arg(0), importUsage)
	}
	if *from == "" {
		return errors.New("import: --from is required\n" + importUsage)
	}
	if *concurrency < 1 || *concurrency > maxConcurrency {
		return fmt.Errorf("import: --concurrency must be between 1 and %d", maxConcurrency)
	}
	if *timeout <= 0 {
		return errors.New("import: --timeout must be positive")
	}
	if *pageSize < 1 {
		return errors.New("import: --page-size must be positive")
	}
	im := &importer{repoGlobs: repoGlobs, concurrency: *concurrency, pageSize: *pageSize, overwrite: *overwrite}
	for _, p := range tagPatterns {
		re, err := regexp.Compile(`^(?:` + p + `)$`)
		if err != nil {
			return fmt.Errorf("import: --tags %q: %w", p, err)
		}
		im.tagPatterns = append(im.tagPatterns, re)
	}
	for _, g := range repoGlobs {
		if strings.Trim(g, "/") == "" {
			return fmt.Errorf("import: --repositories %q is empty", g)
		}
	}
	base, err := importTransport(*insecure, *caFile, *concurrency, *timeout)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := im.source(*from, *username, *passwordFile, base); err != nil {
		return fmt.Errorf("import: source: %w", err)
	}
	if err := im.destination(*to, *into, *toUsername, *toPasswordFile, base); err != nil {
		return fmt.Errorf("import: destination: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := checkAccess(ctx, im.srcReg, im.srcAuth, im.srcTransport); err != nil {
		return fmt.Errorf("import: %w", im.sourceError("checking the credentials", err))
	}
	if err := checkAccess(ctx, im.dstReg, im.dstAuth, im.uploads); err != nil {
		return fmt.Errorf("import: %w", destinationError(err))
	}
	im.progress = newImportProgress(stdout, *every, &im.bytes)
	fmt.Fprintf(stdout, "import: %s into %s (through its API at %s), %d at once\n",
		im.srcName, im.dstName, *to, im.concurrency)
	err = im.run(ctx)
	im.uploads.cancelAll()
	return im.finish(err, ctx.Err() != nil)
}

// importer copies one registry into dockyard. Its counters are read by the progress
// display while workers update them.
type importer struct {
	repoGlobs   []string
	tagPatterns []*regexp.Regexp
	concurrency int
	pageSize    int
	overwrite   bool // move destination tags that differ from the source's

	srcReg       name.Registry
	srcName      string // as the user gave it
	srcPuller    *remote.Puller
	srcAuth      authn.Authenticator
	srcTransport http.RoundTripper
	dstAuth      authn.Authenticator
	dstReg       name.Registry
	dstPrefix    string // namespace prepended to every repository ("" for none)
	dstName      string
	dstPuller    *remote.Puller
	dstPusher    *remote.Pusher
	uploads      *uploadSessions // the destination's, through which dstPuller and dstPusher go

	// noReferrersAPI: the source answered that it has no referrers API, so its
	// referrers are exactly those its sha256-<hex> tags list, and subjects without
	// such a tag need no request.
	noReferrersAPI bool

	bytes    atomic.Int64 // read from the source
	homes    blobHomes
	progress *importProgress

	mu       sync.Mutex
	failures []importFailure
	kept     []string // tags left as they were at the destination
	fatal    error    // a full destination: every further upload would fail too
	cancel   context.CancelFunc
}

type importFailure struct{ ref, err string }

// The most images copied at once, and the blobs each uploads at once: their product
// stays well under dockyard's default limit of 256 open uploads per client
// (limits.upload_sessions_per_client), which the referrers pushed meanwhile share.
const (
	maxConcurrency = 16
	jobsPerImage   = 2
)

// importTransport is the HTTP transport both registries are reached through: a
// response must start within timeout, and its body must go on within timeout.
func importTransport(insecure bool, caFile string, concurrency int, timeout time.Duration) (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4 * concurrency
	tr.ResponseHeaderTimeout = timeout
	tlsConfig := &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	tr.TLSClientConfig = tlsConfig
	return &idleTimeout{inner: tr, timeout: timeout}, nil
}

// idleTimeout fails a response body's Read when no byte arrives within timeout: a
// source that stalls mid-blob fails that image and frees its worker instead of
// holding it forever (ResponseHeaderTimeout only covers the wait for the headers).
type idleTimeout struct {
	inner   http.RoundTripper
	timeout time.Duration
}

// errIdle is the cause of a request ended by idleTimeout.
var errIdle = errors.New("no data received within --timeout")

func (t *idleTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &idleBody{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, timeout: t.timeout,
		what: req.Method + " " + req.URL.Redacted()}
	return resp, nil
}

type idleBody struct {
	io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration
	what    string
}

func (b *idleBody) Read(p []byte) (int, error) {
	timer := time.AfterFunc(b.timeout, func() { b.cancel(errIdle) })
	n, err := b.ReadCloser.Read(p)
	timer.Stop()
	if err != nil && errors.Is(context.Cause(b.ctx), errIdle) {
		err = fmt.Errorf("%s: %w (%s)", b.what, errIdle, b.timeout)
	}
	return n, err
}

func (b *idleBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// checkAccess is the run's first request to a registry, with its credentials (the
// token flow's too): a refusal (401) of credentials that were given ends the import
// before anything is copied, as does a registry that cannot be reached. Without
// credentials, a 401 here does not: anonymous access may still be granted per
// repository, and what is refused fails alone.
func checkAccess(ctx context.Context, reg name.Registry, a authn.Authenticator, tr http.RoundTripper) error {
	t, err := transport.NewWithContext(ctx, reg, a, tr, nil)
	if err == nil {
		var req *http.Request
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil); err == nil {
			var resp *http.Response
			if resp, err = (&http.Client{Transport: t}).Do(req); err == nil {
				err = transport.CheckError(resp, http.StatusOK)
				resp.Body.Close()
			}
		}
	}
	var terr *transport.Error
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &terr):
		return err // not reached
	case terr.StatusCode == http.StatusUnauthorized && a != authn.Anonymous:
		return err
	}
	return nil
}

// withoutUserinfo is s without what could be a user and password before its host,
// for an error message about a URL that did not parse.
func withoutUserinfo(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}

// credentials are a user and the password in a file, or the docker config's for reg
// (`docker login`), else anonymous.
func credentials(reg name.Registry, user, passwordFile string) (authn.Authenticator, error) {
	if user == "" {
		if passwordFile != "" {
			return nil, errors.New("a password file without a user name")
		}
		return authn.DefaultKeychain.Resolve(reg)
	}
	if passwordFile == "" {
		return nil, fmt.Errorf("user %q needs a password file", user)
	}
	password, err := secret(passwordFile, "")
	if err != nil {
		return nil, err
	}
	return &authn.Basic{Username: user, Password: password}, nil
}

// parseRegistryURL checks an http(s)://host[:port][/path] URL. Credentials in it
// (user:password@) are refused, never echoed: credentialFlags names the flags to
// use instead.
func parseRegistryURL(s, credentialFlags string) (*url.URL, name.Registry, error) {
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		u.User = nil
		return nil, name.Registry{}, fmt.Errorf("%q: credentials in the URL are not accepted (they would show in process lists and logs): give the user with %s", u.String(), credentialFlags)
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, name.Registry{}, fmt.Errorf("%q: must be http(s)://host[:port][/path]", withoutUserinfo(s))
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, name.Registry{}, fmt.Errorf("%q: %w", s, err)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, reg, nil
}

func (im *importer) source(from, user, passwordFile string, base http.RoundTripper) error {
	u, reg, err := parseRegistryURL(from, "--username and its password in a file with --password-file")
	if err != nil {
		return err
	}
	a, err := credentials(reg, user, passwordFile)
	if err != nil {
		return err
	}
	ep := &endpoint{host: u.Host, scheme: u.Scheme, addr: u.Host, prefix: u.Path, inner: base, bytes: &im.bytes}
	im.srcReg, im.srcName, im.srcAuth, im.srcTransport = reg, u.String(), a, ep
	im.srcPuller, err = remote.NewPuller(remote.WithAuth(a), remote.WithTransport(ep),
		remote.WithPageSize(im.pageSize), remote.WithUserAgent("dockyard-import"))
	return err
}

// destination resolves --to (where dockyard listens) and --into (how the registry
// receiving the import is named: the Host that routes to it, a namespace route, or
// both), the way `docker push HOST/NAMESPACE/repo` would name them: a first
// component with a dot or a colon, or localhost, is a host.
func (im *importer) destination(to, into, user, passwordFile string, base http.RoundTripper) error {
	u, _, err := parseRegistryURL(to, "--to-username and its password in a file with --to-password-file")
	if err != nil {
		return err
	}
	if u.Path != "" {
		return fmt.Errorf("--to %q: dockyard serves /v2/ at the root; name a namespace with --into", to)
	}
	host, prefix := u.Host, strings.Trim(into, "/")
	if first, rest, _ := strings.Cut(prefix, "/"); strings.ContainsAny(first, ".:") || first == "localhost" {
		host, prefix = first, rest
	}
	if prefix != "" {
		if _, err := oci.ParseRepository(prefix); err != nil {
			return fmt.Errorf("--into %q: namespace %q is not a repository path", into, prefix)
		}
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return fmt.Errorf("--into %q: %w", into, err)
	}
	a, err := credentials(reg, user, passwordFile)
	if err != nil {
		return err
	}
	// Requests for the destination's name (the registry's API and its token realm)
	// go to --to, with that name as their Host.
	ep := &endpoint{host: host, scheme: u.Scheme, addr: u.Host, inner: base}
	im.uploads = &uploadSessions{inner: ep, open: map[string]*openUpload{}}
	im.dstReg, im.dstPrefix, im.dstAuth = reg, prefix, a
	im.dstName = strings.TrimSuffix(host+"/"+prefix, "/")
	opts2 := []remote.Option{remote.WithAuth(a), remote.WithTransport(im.uploads), remote.WithUserAgent("dockyard-import"),
		remote.WithJobs(jobsPerImage), remote.WithRetryPredicate(retryable)}
	if im.dstPuller, err = remote.NewPuller(opts2...); err != nil {
		return err
	}
	im.dstPusher, err = remote.NewPusher(opts2...)
	return err
}

// endpoint sends the requests for one registry name where that registry listens:
// with --to's scheme and address (Host stays the name, which dockyard routes by), and
// below a path for sources behind path-based routing (Nexus: /repository/NAME/v2/…).
// It counts the response bytes when asked to.
type endpoint struct {
	host   string // the registry as named in URLs
	scheme string
	addr   string // where to connect
	prefix string // before /v2
	inner  http.RoundTripper
	bytes  *atomic.Int64
}

func (e *endpoint) RoundTrip(req *http.Request) (*http.Response, error) {
	orig := req
	if req.URL.Host == e.host {
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = e.scheme, e.addr, e.host
		if e.prefix != "" && (r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/")) {
			r.URL.Path = e.prefix + r.URL.Path
			r.URL.RawPath = ""
		}
		req = r
	}
	resp, err := e.inner.RoundTrip(req)
	if err == nil && req != orig {
		// Relative Locations (an upload session's) resolve against the registry's name,
		// not the address connected to, so that the session's next requests come here
		// again and are rewritten too (with the Host dockyard routes by).
		named := req.Clone(req.Context())
		named.URL.Host, named.URL.Path, named.URL.RawPath = e.host, orig.URL.Path, orig.URL.RawPath
		resp.Request = named
	}
	if err == nil && e.bytes != nil {
		resp.Body = upstream.CountingBody(resp.Body, e.bytes)
	}
	return resp, err
}

// uploadSessions follows the upload sessions opened at the destination (the Location
// of a POST …/blobs/uploads/ answered 202, moved by each PATCH, finished by a PUT
// answered 201) and cancels (DELETE) those a failure leaves open: dockyard counts a
// client's open sessions (limits.upload_sessions_per_client, 256 by default) until
// its upload purging, a day later, so abandoned sessions would make the next runs
// fail with 429. A session whose PATCH or PUT fails is cancelled at once
// (go-containerregistry starts a new one to retry); one opened for an image that
// then fails, when that image is given up; the rest when the import ends.
type uploadSessions struct {
	inner http.RoundTripper
	mu    sync.Mutex
	open  map[string]*openUpload // by the path of the session's URL
}

type openUpload struct {
	url   string // where the next request for it goes
	auth  string // the Authorization its last request carried
	owner *uploadOwner
}

// uploadOwner stands for one image's copy, in the context of its requests.
type uploadOwner struct{ _ byte }

type uploadOwnerKey struct{}

func withUploadOwner(ctx context.Context) (context.Context, *uploadOwner) {
	o := &uploadOwner{}
	return context.WithValue(ctx, uploadOwnerKey{}, o), o
}

// cancelTimeout bounds each DELETE of an abandoned session (run on interruption too).
const cancelTimeout = 10 * time.Second

func (u *uploadSessions) RoundTrip(req *http.Request) (*http.Response, error) {
	u.mu.Lock()
	s := u.open[req.URL.Path]
	u.mu.Unlock()
	starts := req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/blobs/uploads/")
	resp, err := u.inner.RoundTrip(req)
	switch {
	case starts && err == nil && resp.StatusCode == http.StatusAccepted:
		if loc, lerr := resp.Location(); lerr == nil {
			owner, _ := req.Context().Value(uploadOwnerKey{}).(*uploadOwner)
			u.mu.Lock()
			u.open[loc.Path] = &openUpload{url: loc.String(), auth: req.Header.Get("Authorization"), owner: owner}
			u.mu.Unlock()
		}
	case s != nil && (req.Method == http.MethodPatch || req.Method == http.MethodPut):
		u.mu.Lock()
		delete(u.open, req.URL.Path)
		u.mu.Unlock()
		switch {
		case err == nil && req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated:
			// finished
		case err == nil && req.Method == http.MethodPatch && (resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNoContent):
			if loc, lerr := resp.Location(); lerr == nil {
				u.mu.Lock()
				u.open[loc.Path] = &openUpload{url: loc.String(), auth: req.Header.Get("Authorization"), owner: s.owner}
				u.mu.Unlock()
			}
		default:
			u.cancel(s)
		}
	}
	return resp, err
}

// cancelOwned cancels the sessions still open for owner's image.
func (u *uploadSessions) cancelOwned(owner *uploadOwner) {
	u.cancelWhere(func(s *openUpload) bool { return s.owner == owner })
}

// cancelAll cancels every session still open.
func (u *uploadSessions) cancelAll() {
	u.cancelWhere(func(*openUpload) bool { return true })
}

func (u *uploadSessions) cancelWhere(match func(*openUpload) bool) {
	if u == nil {
		return
	}
	var left []*openUpload
	u.mu.Lock()
	for path, s := range u.open {
		if match(s) {
			left = append(left, s)
			delete(u.open, path)
		}
	}
	u.mu.Unlock()
	for _, s := range left {
		u.cancel(s)
	}
}

// cancel deletes a session, best effort: what is not cancelled is purged by
// dockyard later.
func (u *uploadSessions) cancel(s *openUpload) {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.url, nil)
	if err != nil {
		return
	}
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	if resp, err := u.inner.RoundTrip(req); err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

// importRepo is one repository's progress.
type importRepo struct {
	name                          string
	fallbackTags                  map[string]bool // its referrers tags (sha256-<hex>), whatever --tags selects
	pending                       atomic.Int64    // tags not yet finished
	interrupted                   atomic.Bool     // some tag was left by an interruption
	copied, skipped, kept, failed atomic.Int64
}

type importJob struct {
	repo *importRepo
	tag  string
}

// maxQueuedImages bounds the tags listed ahead of the copying (a few MiB of memory);
// listing runs ahead so that the total, and with it the ETA, is known early.
const maxQueuedImages = 1 << 16

// run lists the source and copies what it lists, concurrency images at a time; the
// lister feeds the workers through a bounded queue, so copying starts at once.
func (im *importer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	im.cancel = cancel
	jobs := make(chan importJob, maxQueuedImages)
	var wg sync.WaitGroup
	for range im.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				im.copyTag(ctx, j)
			}
		}()
	}
	stopDisplay := im.progress.start()
	err := im.list(ctx, jobs)
	close(jobs)
	wg.Wait()
	stopDisplay()
	if im.fatal != nil {
		return im.fatal
	}
	return err
}

// list walks the source's catalog (unless every --repositories is a literal name) and
// each repository's tags, queueing the tags to copy.
func (im *importer) list(ctx context.Context, jobs chan<- importJob) error {
	repos, err := im.repositories(ctx)
	if err != nil {
		return err
	}
	im.progress.reposTotal.Store(int64(len(repos)))
	if len(repos) > 0 {
		im.noReferrersAPI = im.lacksReferrersAPI(ctx, repos[0])
	}
	for _, name := range repos {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		repo := &importRepo{name: name}
		tags, err := im.tags(ctx, repo)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			im.failListed(name, fmt.Errorf("listing tags: %w", err))
			im.progress.repoDone(repo, true)
			continue
		}
		if len(tags) == 0 {
			im.progress.repoDone(repo, false)
			continue
		}
		repo.pending.Store(int64(len(tags)))
		im.progress.imagesTotal.Add(int64(len(tags)))
		for _, tag := range tags {
			select {
			case jobs <- importJob{repo: repo, tag: tag}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	im.progress.listed.Store(true)
	return nil
}

// repositories are the source's repositories that --repositories selects: from the
// catalog, or, when every glob is a literal name, those names (registries such as
// Docker Hub have no catalog).
func (im *importer) repositories(ctx context.Context) ([]string, error) {
	literal := len(im.repoGlobs) > 0
	for _, g := range im.repoGlobs {
		literal = literal && !strings.ContainsAny(g, `*?[\`)
	}
	if literal {
		var repos []string
		for _, g := range im.repoGlobs {
			r := strings.Trim(g, "/")
			if _, err := im.validRepo(r); err != nil {
				return nil, fmt.Errorf("--repositories %q: %w", g, err)
			}
			repos = append(repos, r)
		}
		slices.Sort(repos)
		return slices.Compact(repos), nil
	}
	c, err := im.srcPuller.Catalogger(ctx, im.srcReg)
	if err != nil {
		return nil, im.sourceError("listing repositories", err)
	}
	var repos []string
	pages := newPager("the catalog", maxCatalogRepositories)
	for c.HasNext() {
		page, err := c.Next(ctx)
		if err != nil {
			return nil, im.sourceError("listing repositories", err)
		}
		fresh, err := pages.add(page.Repos, page.Next != "")
		if err != nil {
			return nil, im.sourceError("listing repositories", err)
		}
		for _, r := range fresh {
			if !im.wantRepo(r) {
				continue
			}
			if _, err := im.validRepo(r); err != nil {
				im.failListed(r, err)
				continue
			}
			repos = append(repos, r)
		}
	}
	return repos, nil
}

// Bounds on what a source may list: a catalog or tag list past them is refused.
const (
	maxCatalogRepositories = 1_000_000
	maxTagsPerRepository   = 1_000_000
)

// pager checks that a paginated list (the catalog, a tag list) moves forward: each
// page must end with a name not seen before, and the whole list stays under a bound.
// A source whose Link header points back at a page it already sent would otherwise
// be followed forever, the list growing in memory. Names seen twice are dropped.
type pager struct {
	what string
	max  int
	seen map[string]bool
}

func newPager(what string, max int) *pager {
	return &pager{what: what, max: max, seen: map[string]bool{}}
}

// add takes one page (more: it links to another) and returns its names not seen
// before.
func (p *pager) add(page []string, more bool) ([]string, error) {
	if more && (len(page) == 0 || p.seen[page[len(page)-1]]) {
		return nil, fmt.Errorf("the source's pages of %s do not move forward (a Link to a page already listed): stopped after %d names", p.what, len(p.seen))
	}
	var fresh []string
	for _, n := range page {
		if p.seen[n] {
			continue
		}
		if len(p.seen) >= p.max {
			return nil, fmt.Errorf("the source lists more than %d names in %s", p.max, p.what)
		}
		p.seen[n] = true
		fresh = append(fresh, n)
	}
	return fresh, nil
}

// validRepo checks a repository name the source gave (its catalog, or --repositories)
// and that the destination's name for it is the namespace and that name, joined: a
// name such as team/../../victim/app would otherwise be collapsed by
// go-containerregistry's path.Join into victim/app, outside --into.
func (im *importer) validRepo(repo string) (name.Repository, error) {
	if _, err := oci.ParseRepository(repo); err != nil {
		return name.Repository{}, fmt.Errorf("refused: the source names a repository %q, which is not a valid repository name", repo)
	}
	want := repo
	if im.dstPrefix != "" {
		want = im.dstPrefix + "/" + repo
	}
	dst := im.dstRepo(repo)
	if dst.RepositoryStr() != want || im.srcReg.Repo(repo).RepositoryStr() != repo {
		return name.Repository{}, fmt.Errorf("refused: repository %q would be written as %q", repo, dst.RepositoryStr())
	}
	return dst, nil
}

// failListed records a name from the source that is not copied: a failure, counted as
// one image, that does not stop the run.
func (im *importer) failListed(ref string, err error) {
	im.progress.imagesTotal.Add(1)
	im.progress.failed.Add(1)
	im.fail(ref, err)
}

func (im *importer) sourceError(what string, err error) error {
	if isUnauthorized(err) {
		return fmt.Errorf("source %s: %s: %w (check --username and --password-file)", im.srcName, what, err)
	}
	return fmt.Errorf("source %s: %s: %w", im.srcName, what, err)
}

func (im *importer) wantRepo(repo string) bool {
	if len(im.repoGlobs) == 0 {
		return true
	}
	for _, g := range im.repoGlobs {
		if auth.MatchGlob(strings.Trim(g, "/"), repo) {
			return true
		}
	}
	return false
}

func (im *importer) wantTag(tag string) bool {
	if len(im.tagPatterns) == 0 {
		return true
	}
	for _, re := range im.tagPatterns {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}

// fallbackTag is the referrers tag schema's tag of a digest.
var fallbackTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)

// tags lists a repository's tags (every page) that --tags selects, and notes its
// referrers tags.
func (im *importer) tags(ctx context.Context, repo *importRepo) ([]string, error) {
	l, err := im.srcPuller.Lister(ctx, im.srcReg.Repo(repo.name))
	if err != nil {
		return nil, err
	}
	var tags []string
	repo.fallbackTags = map[string]bool{}
	pages := newPager("the tags of "+repo.name, maxTagsPerRepository)
	for l.HasNext() {
		page, err := l.Next(ctx)
		if err != nil {
			return nil, err
		}
		fresh, err := pages.add(page.Tags, page.Next != "")
		if err != nil {
			return nil, err
		}
		for _, t := range fresh {
			if _, err := oci.ParseTag(t); err != nil {
				if im.wantTag(t) {
					im.failListed(repo.name+":"+t, fmt.Errorf("refused: the source names a tag %q, which is not a valid tag", t))
				}
				continue
			}
			if im.wantTag(t) {
				tags = append(tags, t)
			}
			if fallbackTag.MatchString(t) {
				repo.fallbackTags[t] = true
			}
		}
	}
	return tags, nil
}

// lacksReferrersAPI asks the source for the referrers of a digest nothing has (the
// empty blob's), which a registry with the API answers with an empty list.
func (im *importer) lacksReferrersAPI(ctx context.Context, repo string) bool {
	const none = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	_, err := remote.Referrers(im.srcReg.Repo(repo).Digest(none), remote.Reuse(im.srcPuller),
		remote.WithContext(ctx), remote.WithReferrersTagFallback(false))
	return err != nil && strings.Contains(err.Error(), "does not support the Referrers API")
}

func (im *importer) dstRepo(repo string) name.Repository {
	if im.dstPrefix != "" {
		repo = im.dstPrefix + "/" + repo
	}
	return im.dstReg.Repo(repo)
}

// copyTag copies one tag and records the outcome.
func (im *importer) copyTag(ctx context.Context, j importJob) {
	defer func() {
		if ctx.Err() != nil {
			j.repo.interrupted.Store(true) // not done: the next run finishes it
		}
		if j.repo.pending.Add(-1) == 0 && !j.repo.interrupted.Load() {
			im.progress.repoDone(j.repo, false)
		}
	}()
	if ctx.Err() != nil {
		return // interrupted: not a failure; the next run copies it
	}
	ctx, owner := withUploadOwner(ctx)
	outcome, err := im.copyOne(ctx, j.repo, j.tag)
	im.uploads.cancelOwned(owner) // left open by a failure: none after a success
	switch {
	case ctx.Err() != nil:
	case err != nil:
		j.repo.failed.Add(1)
		im.progress.failed.Add(1)
		im.fail(j.repo.name+":"+j.tag, err)
	case outcome == tagKept:
		j.repo.kept.Add(1)
		im.progress.kept.Add(1)
		im.mu.Lock()
		im.kept = append(im.kept, j.repo.name+":"+j.tag)
		im.mu.Unlock()
	case outcome == tagSkipped:
		j.repo.skipped.Add(1)
		im.progress.skipped.Add(1)
	default:
		j.repo.copied.Add(1)
		im.progress.copied.Add(1)
	}
}

// fail records a failure; a full destination ends the run, since every other upload
// would fail the same way. A refusal (401, 403) concerns one repository: the
// credentials were checked before the run.
func (im *importer) fail(ref string, err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.failures = append(im.failures, importFailure{ref: ref, err: err.Error()})
	var fe *fatalError
	if errors.As(err, &fe) && im.fatal == nil {
		im.fatal = fmt.Errorf("%s: %w", ref, err)
		im.cancel()
	}
}

// What became of a tag.
type tagOutcome int

const (
	tagCopied  tagOutcome = iota
	tagSkipped            // the destination has it, with the source's digest
	tagKept               // the destination has it with another digest (pushed there since?), left alone without --overwrite
)

// copyOne copies repo:tag unless the destination's tag already has the source's
// digest, or another one (unless --overwrite), and reports what it did. Order matters for resuming: first the
// referrers (dockyard, like the OCI spec, accepts a referrer before its subject),
// then the manifest's blobs and children, and the tag last, so a tag is only ever
// pushed over something complete.
func (im *importer) copyOne(ctx context.Context, repo *importRepo, tag string) (outcome tagOutcome, err error) {
	src, err := im.srcPuller.Get(ctx, im.srcReg.Repo(repo.name).Tag(tag))
	if err != nil {
		if isUnauthorized(err) {
			return 0, fmt.Errorf("source: %w (check --username and --password-file)", err)
		}
		return 0, fmt.Errorf("source: %w", err)
	}
	dst := im.dstRepo(repo.name)
	have, err := im.dstPuller.Head(ctx, dst.Tag(tag))
	skipped := false
	switch {
	case err == nil && have.Digest == src.Digest:
		skipped = true
	case err == nil && !im.overwrite:
		return tagKept, nil
	case err != nil && !isNotFound(err):
		return 0, destinationError(err)
	}
	// Referrers are looked up for tags already there too: a signature added to the
	// source since the last run arrives with this one.
	children, err := indexChildren(src)
	if err != nil {
		return 0, fmt.Errorf("source: %w", err)
	}
	if err := im.copyReferrers(ctx, repo, src.Digest, children, map[v1.Hash]bool{}, 0); err != nil {
		return 0, err
	}
	if skipped {
		return tagSkipped, nil
	}
	blobs, err := blobsOf(src)
	if err != nil {
		return 0, fmt.Errorf("source: %w", err)
	}
	if err := im.mountBlobs(ctx, dst, blobs); err != nil {
		return 0, err
	}
	// By digest first (the blobs and children, shared by the tags of one image),
	// then the tag alone: the pusher shares a digest's outcome among its concurrent
	// callers, and one tag's refusal (an immutable release tag) must not become its
	// siblings'.
	if err := im.dstPusher.Push(ctx, dst.Digest(src.Digest.String()), src); err != nil {
		return 0, destinationError(err)
	}
	if err := im.dstPusher.Put(ctx, dst.Tag(tag), src); err != nil {
		return 0, destinationError(err)
	}
	im.homes.remember(dst, blobs)
	return 0, nil
}

// blobHomes remembers, for blobs copied to the destination, a repository there that
// has them, so that another repository gets them by a cross-repository mount rather
// than their bytes once more (base layers shared by many images). At most
// maxBlobHomes are remembered; past that, blobs are uploaded again.
type blobHomes struct {
	mu      sync.Mutex
	m       map[v1.Hash]name.Repository
	offered map[string]bool // "repository@digest" mounted (or offered) once already
}

const maxBlobHomes = 1 << 20 // each map: some 100 MiB at most

func (h *blobHomes) remember(repo name.Repository, blobs []v1.Layer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[v1.Hash]name.Repository{}
	}
	for _, l := range blobs {
		if d, err := l.Digest(); err == nil && len(h.m) < maxBlobHomes {
			if _, ok := h.m[d]; !ok {
				h.m[d] = repo
			}
		}
	}
}

// mountable returns the repository to mount d from into repo, once per pair.
func (h *blobHomes) mountable(d v1.Hash, repo name.Repository) (name.Repository, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	home, ok := h.m[d]
	if !ok || home == repo {
		return home, false
	}
	key := repo.String() + "@" + d.String()
	if h.offered == nil {
		h.offered = map[string]bool{}
	}
	if h.offered[key] || len(h.offered) >= maxBlobHomes {
		return home, false
	}
	h.offered[key] = true
	return home, true
}

// blobsOf lists the blobs of an image, or of an index's images (configs and layers),
// as the source's lazy layers: nothing is downloaded until a byte is read.
func blobsOf(d *remote.Descriptor) ([]v1.Layer, error) {
	var images []v1.Image
	switch {
	case d.MediaType.IsImage():
		img, err := d.Image()
		if err != nil {
			return nil, err
		}
		images = append(images, img)
	case d.MediaType.IsIndex():
		idx, err := d.ImageIndex()
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, c := range m.Manifests {
			if c.MediaType.IsImage() {
				img, err := idx.Image(c.Digest)
				if err != nil {
					return nil, err
				}
				images = append(images, img)
			}
		}
	}
	var blobs []v1.Layer
	for _, img := range images {
		layers, err := img.Layers()
		if err != nil {
			return nil, err
		}
		cfg, err := partial.ConfigLayer(img)
		if err != nil {
			return nil, err
		}
		blobs = append(append(blobs, layers...), cfg)
	}
	return blobs, nil
}

// mountBlobs gives repo, by cross-repository mount, each blob that another
// repository of the destination received earlier in this run. dockyard mounts when
// the user may pull the other repository; otherwise the layer is uploaded as usual.
func (im *importer) mountBlobs(ctx context.Context, repo name.Repository, blobs []v1.Layer) error {
	for _, l := range blobs {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		if mt, err := l.MediaType(); err != nil || !mt.IsDistributable() {
			continue // a foreign layer: not copied at all
		}
		home, ok := im.homes.mountable(d, repo)
		if !ok {
			continue
		}
		w := &watchedLayer{Layer: l}
		ml := &remote.MountableLayer{Layer: w, Reference: home.Digest(d.String())}
		if err := im.dstPusher.Upload(ctx, repo, ml); err != nil {
			return destinationError(err)
		}
		if !w.read.Load() { // mounted, or there already (a run resumed)
			im.progress.mounted.Add(1)
		}
	}
	return nil
}

// watchedLayer tells whether a layer's bytes were read: not when the destination
// mounted it, or had it already.
type watchedLayer struct {
	v1.Layer
	read atomic.Bool
}

func (w *watchedLayer) Compressed() (io.ReadCloser, error) {
	w.read.Store(true)
	return w.Layer.Compressed()
}

// maxReferrerDepth bounds the chain of referrers followed (a signature of an SBOM of
// an image is depth 2).
const maxReferrerDepth = 4

// indexChildren lists an index's children (nil for anything else).
func indexChildren(d *remote.Descriptor) ([]v1.Hash, error) {
	if !d.MediaType.IsIndex() {
		return nil, nil
	}
	idx, err := d.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var children []v1.Hash
	for _, c := range m.Manifests {
		children = append(children, c.Digest)
	}
	return children, nil
}

// copyReferrers copies, by digest, every manifest referring to subject or to one of
// its children (an index's), and what refers to those in turn. A referrer the
// destination has is not downloaded again.
func (im *importer) copyReferrers(ctx context.Context, repo *importRepo, subject v1.Hash, children []v1.Hash, seen map[v1.Hash]bool, depth int) error {
	if depth >= maxReferrerDepth {
		return nil
	}
	srcRepo, dst := im.srcReg.Repo(repo.name), im.dstRepo(repo.name)
	for _, s := range append([]v1.Hash{subject}, children...) {
		if seen[s] {
			continue
		}
		seen[s] = true
		if im.noReferrersAPI && !repo.fallbackTags[s.Algorithm+"-"+s.Hex] {
			continue
		}
		refs, err := remote.Referrers(srcRepo.Digest(s.String()), remote.Reuse(im.srcPuller), remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("source: referrers of %s: %w", s, err)
		}
		m, err := refs.IndexManifest()
		if err != nil {
			return fmt.Errorf("source: referrers of %s: %w", s, err)
		}
		for _, r := range m.Manifests {
			_, err := im.dstPuller.Head(ctx, dst.Digest(r.Digest.String()))
			missing := isNotFound(err)
			if err != nil && !missing {
				return destinationError(err)
			}
			var grandchildren []v1.Hash
			if missing || r.MediaType.IsIndex() {
				ref, err := im.srcPuller.Get(ctx, srcRepo.Digest(r.Digest.String()))
				if err != nil {
					return fmt.Errorf("source: referrer %s of %s: %w", r.Digest, s, err)
				}
				if grandchildren, err = indexChildren(ref); err != nil {
					return fmt.Errorf("source: referrer %s of %s: %w", r.Digest, s, err)
				}
				if missing {
					if err := im.dstPusher.Push(ctx, dst.Digest(r.Digest.String()), ref); err != nil {
						return fmt.Errorf("referrer %s of %s: %w", r.Digest, s, destinationError(err))
					}
					im.progress.referrers.Add(1)
				}
			}
			if err := im.copyReferrers(ctx, repo, r.Digest, grandchildren, seen, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// retryable is go-containerregistry's retry predicate, but for a full destination:
// dockyard answers 507 with the code UNKNOWN, which it would retry, for every blob.
func retryable(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusInsufficientStorage {
		return false
	}
	var te interface{ Temporary() bool }
	if errors.As(err, &te) && te.Temporary() && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// fatalError is a failure that ends the run.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func destinationError(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusInsufficientStorage {
		return &fatalError{fmt.Errorf("destination: %w (dockyard is out of space: the import stops; free some, then run the same command again)", err)}
	}
	if isUnauthorized(err) {
		return fmt.Errorf("destination: %w (check --to-username and --to-password-file)", err)
	}
	return fmt.Errorf("destination: %w", err)
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

func isUnauthorized(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusUnauthorized
}

// finish prints the summary and the failures, and makes the exit status.
func (im *importer) finish(err error, interrupted bool) error {
	p := im.progress
	fmt.Fprintf(p.out, "import: finished in %s: %d/%d repositories, %d images: %d copied, %d skipped, %d failed; %d referrers copied; %d blobs mounted; %d tags differ at the destination (kept; --overwrite to replace); %s read from the source\n",
		time.Since(p.began).Round(100*time.Millisecond), p.reposDone.Load(), p.reposTotal.Load(),
		p.imagesTotal.Load(), p.copied.Load(), p.skipped.Load(), p.failed.Load(), p.referrers.Load(), p.mounted.Load(),
		p.kept.Load(), humanize.IBytes(uint64(im.bytes.Load())))
	im.mu.Lock()
	failures, kept := im.failures, im.kept
	im.mu.Unlock()
	slices.Sort(kept)
	for _, ref := range kept {
		fmt.Fprintf(p.out, "import: kept: %s differs at the destination (kept; --overwrite to replace)\n", ref)
	}
	sort.Slice(failures, func(i, j int) bool { return failures[i].ref < failures[j].ref })
	for _, f := range failures {
		fmt.Fprintf(p.out, "import: failed: %s: %s\n", f.ref, f.err)
	}
	switch {
	case interrupted:
		return errors.New("import interrupted: run the same command again to resume (what was copied is skipped)")
	case err != nil:
		return err
	case len(failures) > 0:
		return fmt.Errorf("%d failures (listed above); run the same command again to retry them", len(failures))
	}
	return nil
}

// importProgress shows how far the import is: on a terminal one line redrawn in
// place, otherwise a plain line every interval and one per repository finished.
type importProgress struct {
	out   io.Writer
	tty   bool
	every time.Duration
	bytes *atomic.Int64
	began time.Time

	reposTotal, reposDone                                 atomic.Int64
	imagesTotal, copied, skipped, kept, failed, referrers atomic.Int64
	mounted                                               atomic.Int64
	listed                                                atomic.Bool

	mu sync.Mutex // one writer at a time
}

func newImportProgress(out io.Writer, every time.Duration, bytes *atomic.Int64) *importProgress {
	p := &importProgress{out: out, every: every, bytes: bytes, began: time.Now()}
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	if p.every <= 0 {
		p.every = 5 * time.Second
	}
	return p
}

// start draws the progress until the returned function is called.
func (p *importProgress) start() (stop func()) {
	interval := p.every
	if p.tty {
		interval = 200 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.print("")
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		if p.tty {
			p.mu.Lock()
			fmt.Fprint(p.out, "\r\033[K")
			p.mu.Unlock()
		}
	}
}

// print writes a line above the status line (a terminal) or alone, then the status.
func (p *importProgress) print(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.tty && line != "":
		fmt.Fprintf(p.out, "\r\033[K%s\n%s", line, p.status())
	case p.tty:
		fmt.Fprintf(p.out, "\r\033[K%s", p.status())
	case line != "":
		fmt.Fprintln(p.out, line)
	default:
		fmt.Fprintln(p.out, p.status())
	}
}

func (p *importProgress) repoDone(r *importRepo, failed bool) {
	p.reposDone.Add(1)
	n := r.copied.Load() + r.skipped.Load() + r.kept.Load() + r.failed.Load()
	if failed || n > 0 {
		p.print(fmt.Sprintf("import: repository %s done: %d images: %d copied, %d skipped, %d kept, %d failed",
			r.name, n, r.copied.Load(), r.skipped.Load(), r.kept.Load(), r.failed.Load()))
	}
}

// status is the progress line: repositories, images, bytes, rate and, once the
// source is listed, the time left at the rate so far.
func (p *importProgress) status() string {
	elapsed := time.Since(p.began)
	bytes := p.bytes.Load()
	rate := float64(bytes) / max(elapsed.Seconds(), 0.001)
	done := p.copied.Load() + p.skipped.Load() + p.kept.Load() + p.failed.Load()
	total := fmt.Sprint(p.imagesTotal.Load())
	eta := "?"
	if p.listed.Load() {
		if left := p.imagesTotal.Load() - done; done > 0 {
			eta = (time.Duration(float64(elapsed) / float64(done) * float64(left))).Round(time.Second).String()
		}
	} else {
		total += "+ (listing)"
	}
	return fmt.Sprintf("import: repositories %d/%d, images %d/%s (%d copied, %d skipped, %d failed), %s at %s/s, ETA %s",
		p.reposDone.Load(), p.reposTotal.Load(), done, total, p.copied.Load(), p.skipped.Load(), p.failed.Load(),
		humanize.IBytes(uint64(bytes)), humanize.IBytes(uint64(rate)), eta)
}
