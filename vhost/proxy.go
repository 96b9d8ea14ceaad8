package vhost

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/upstream"
)

// ProxyOptions tune a proxy registry.
type ProxyOptions struct {
	// TagTTL is how long a tag is served from cache before it is revalidated upstream.
	TagTTL time.Duration
	// NegativeTTL is how long an upstream "not found" is remembered.
	NegativeTTL time.Duration
	// MaxSize: larger blobs are streamed from upstream without being cached (0: no
	// limit); a blob the upstream sends without a length fails past it (or past
	// cache.MaxUnknownFetch).
	MaxSize int64
	Logger  *slog.Logger
	Now     func() time.Time
}

// Proxy is a pull-through cache of one upstream registry. Its cache is a hosted
// registry's storage under the proxy's name: manifests by digest and blobs are kept
// forever, tags are revalidated after TagTTL.
type Proxy struct {
	name  string
	local *Hosted
	up    *upstream.Client
	opts  ProxyOptions
	log   *slog.Logger

	// manifests shares one upstream manifest request per repo/reference. Shared work
	// runs on a background context: a request's context (fasthttp recycles it) must
	// not outlive the request.
	manifests singleflight.Group

	mu       sync.Mutex
	fetches  map[oci.Digest]*blobFetch
	fresh    *lru.Cache[string, time.Time] // repo 0 tag → when last validated upstream
	negative *lru.Cache[string, time.Time] // repo 0 reference → until when "not found" holds
	// referrers remembers the upstream's referrers lists (repo 0 subject), served for
	// TagTTL as tags are, and when the upstream cannot be asked.
	referrers *lru.Cache[string, upstreamReferrers]

	// Background downloads outlive the requests that start them but not the proxy:
	// Close cancels them and waits, so the store is never closed under a fill. fills
	// counts them (under mu) from before the upstream is asked until their copy has
	// ended; once closed, none starts.
	life      context.Context
	stop      context.CancelFunc
	fills     int
	fillsDone *sync.Cond // on mu: fills dropped to 0
	closed    bool

	stats ProxyStats
}

// ProxyStats count how a proxy answered (metrics). A hit is answered from the cache
// (a tag revalidated upstream, unchanged, is a hit); a miss downloads from the
// upstream; a join shares a download already running for the same blob.
type ProxyStats struct {
	BlobHits, BlobMisses, ManifestHits, ManifestMisses, FlightJoins atomic.Int64
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() *ProxyStats { return &p.stats }

// Upstream returns the proxy's upstream client.
func (p *Proxy) Upstream() *upstream.Client { return p.up }

// maxRemembered bounds the tags whose freshness, and the references whose absence, a
// proxy remembers.
const maxRemembered = 100000

// blobFetch is one upstream blob download shared by every request for the digest.
type blobFetch struct {
	repo  oci.Repository // the repository the download is for
	ready chan struct{}  // closed once fetch or err is set
	fetch *cache.Fetch
	err   error
	// filled is closed once the background copy has ended; fillErr says how.
	filled  chan struct{}
	fillErr error
}

// NewProxy returns the proxy registry name over up, caching in store.
func NewProxy(name string, store *cache.Store, up *upstream.Client, opts ProxyOptions) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	life, stop := context.WithCancel(context.Background())
	p := &Proxy{
		name: name, up: up, opts: opts, log: opts.Logger.With("registry", name),
		local:   NewHosted(name, store, HostedOptions{AllowSparseIndex: true}),
		fetches: map[oci.Digest]*blobFetch{}, fresh: mustLRU(), negative: mustLRU(), referrers: mustReferrersLRU(),
		life: life, stop: stop,
	}
	p.fillsDone = sync.NewCond(&p.mu)
	return p
}

// Close cancels the proxy's background downloads and waits for them to end.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.stop()
	p.waitFills()
	p.up.CloseIdle()
}

// Retire waits for the proxy's background downloads to end on their own (a reload
// replaced the proxy; clients may still be reading them), then closes it.
func (p *Proxy) Retire() {
	p.waitFills()
	p.Close()
}

// waitFills waits until no background download runs.
func (p *Proxy) waitFills() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.fills > 0 {
		p.fillsDone.Wait()
	}
}

// beginFill counts a background download; false once the proxy is closed.
func (p *Proxy) beginFill() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.fills++
	return true
}

func (p *Proxy) endFill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fills--; p.fills == 0 {
		p.fillsDone.Broadcast()
	}
}

func mustLRU() *lru.Cache[string, time.Time] {
	c, _ := lru.New[string, time.Time](maxRemembered)
	return c
}

func (p *Proxy) Name() string { return p.name }

// Local is what the proxy has cached, read without asking the upstream.
func (p *Proxy) Local() *Hosted { return p.local }

// Writer refuses: a proxy is a read-only cache.
func (p *Proxy) Writer() (Writer, error) {
	return nil, oci.ErrDenied.Withf("registry %q is a read-only cache of %s; push to a hosted registry", p.name, p.up.Host())
}

// UpstreamHost is the upstream's host, as containerd names it in ?ns=.
func (p *Proxy) UpstreamHost() string { return p.up.Host() }

func (p *Proxy) StatBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (int64, error) {
	if size, err := p.local.StatBlob(ctx, repo, d); err == nil {
		return size, nil
	}
	p.mu.Lock()
	bf := p.fetches[d]
	p.mu.Unlock()
	// Another request of this repository is downloading it: its size is known. A
	// download for another repository proves nothing about this one.
	if bf != nil && bf.repo == repo {
		select {
		case <-bf.ready:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if bf.err == nil && bf.fetch.Size() >= 0 {
			return bf.fetch.Size(), nil
		}
	}
	size, err := p.up.HeadBlob(ctx, string(repo), d)
	if err != nil {
		return 0, p.upstreamError(err, oci.ErrBlobUnknown, "blob "+string(d))
	}
	return size, nil
}

// OpenBlob serves a cached blob, or streams it from the upstream while caching it. A
// blob already cached for another repository is linked to this one once the upstream
// confirms the repository has it.
func (p *Proxy) OpenBlob(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, error) {
	if rc, size, ok := p.openStored(ctx, repo, d); ok {
		p.stats.BlobHits.Add(1)
		return rc, size, nil
	}
	p.stats.BlobMisses.Add(1)
	return p.fetchBlob(ctx, repo, d, false, false)
}

// openStored opens d from the cache: linked to repo, or stored for another repository
// (or registry) and linked here only when the upstream confirms this repository has
// it. An unreachable upstream confirms nothing, so content never leaks across
// repositories or out of hosted registries.
func (p *Proxy) openStored(ctx context.Context, repo oci.Repository, d oci.Digest) (io.ReadCloser, int64, bool) {
	if rc, size, err := p.local.OpenBlob(ctx, repo, d); err == nil {
		return rc, size, true
	}
	if _, ok, _ := p.local.store.HasBlob(d); ok {
		if _, err := p.up.HeadBlob(ctx, string(repo), d); err == nil {
			if _, ok, err := p.local.MountBlob(ctx, repo, "", d); ok && err == nil {
				rc, size, err := p.local.OpenBlob(ctx, repo, d)
				return rc, size, err == nil
			}
		}
	}
	return nil, 0, false
}

// fetchBlob joins the download of d running for any repository, or starts one. own: the
// request joined another repository's download and the upstream refused that one; it
// starts its own unless one for its repository runs (taking the place of the other's,
// which goes on for those already reading it). retry: the request joined a download
// that failed before it could read, and tries once more.
func (p *Proxy) fetchBlob(ctx context.Context, repo oci.Repository, d oci.Digest, own, retry bool) (io.ReadCloser, int64, error) {
	p.mu.Lock()
	bf := p.fetches[d]
	leader := bf == nil || own && bf.repo != repo
	if leader {
		bf = &blobFetch{repo: repo, ready: make(chan struct{}), filled: make(chan struct{})}
		p.fetches[d] = bf
	}
	p.mu.Unlock()
	if !leader {
		p.stats.FlightJoins.Add(1)
	}
	if !leader && bf.repo != repo {
		// Sharing another repository's download: first make sure this repository
		// has the blob upstream.
		if _, err := p.up.HeadBlob(ctx, string(repo), d); err != nil {
			return nil, 0, p.upstreamError(err, oci.ErrBlobUnknown, "blob "+string(d))
		}
	}
	if leader {
		if body, size := p.startFetch(ctx, repo, d, bf); body != nil {
			return body, size, nil // too large to cache: the leader streams its download
		}
	}
	select {
	case <-bf.ready:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if errors.Is(bf.err, errStoredMeanwhile) {
		if rc, size, ok := p.openStored(ctx, repo, d); ok {
			return rc, size, nil
		}
		return nil, 0, oci.ErrBlobUnknown.Withf("blob %s is not available to %s", d, repo)
	}
	if errors.Is(bf.err, errTooLarge) {
		body, size, err := p.up.GetBlob(p.life, string(repo), d)
		if err != nil {
			return nil, 0, p.upstreamError(err, oci.ErrBlobUnknown, "blob "+string(d))
		}
		return newVerifiedBody(body, d), size, nil
	}
	var se *upstream.StatusError
	if bf.repo != repo && errors.As(bf.err, &se) {
		// The upstream's answer for another repository (missing there, private, rate
		// limited) says nothing of this one, which has the blob: whoever asks for it
		// through a repository that fails must not deny it to everyone else. (own is
		// never here: it joins only its own repository's download.)
		if rc, size, ok := p.openStored(ctx, repo, d); ok {
			return rc, size, nil
		}
		return p.fetchBlob(ctx, repo, d, true, retry)
	}
	if bf.err != nil {
		return nil, 0, p.upstreamError(bf.err, oci.ErrBlobUnknown, "blob "+string(d))
	}
	if hookBeforeReader != nil {
		hookBeforeReader(bf.filled)
	}
	if rc, ok := bf.fetch.Reader(ctx); ok {
		// A download that fails before its first byte is answered as an error; past
		// it, the response is cut short.
		if err := bf.fetch.Started(ctx); err != nil {
			rc.Close()
			return nil, 0, p.upstreamError(err, oci.ErrBlobUnknown, "blob "+string(d))
		}
		return rc, bf.fetch.Size(), nil
	}
	// The download ended meanwhile: read the committed blob, unless it failed.
	select {
	case <-bf.filled:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if bf.fillErr != nil {
		if !leader && !retry {
			// Another request's download failed before this one could read from it
			// (it is no longer shared, see finish): download it again, once.
			return p.fetchBlob(ctx, repo, d, false, true)
		}
		return nil, 0, p.upstreamError(bf.fillErr, oci.ErrBlobUnknown, "blob "+string(d))
	}
	return p.local.OpenBlob(ctx, repo, d)
}

// fetchLockWait bounds the wait for another instance's download of the same blob.
const fetchLockWait = 30 * time.Second

var (
	errTooLarge = errors.New("blob larger than the proxy caches")
	// errStoredMeanwhile: another instance sharing the index downloaded the blob while
	// this one waited for its turn.
	errStoredMeanwhile = errors.New("blob stored meanwhile")
)

// hookBeforeReader, set by tests only, runs before a request joins a download, with
// the channel closed once the download has ended: tests use it to make a download end
// (or fail) between a request finding it and reading it.
var hookBeforeReader func(filled <-chan struct{})

// hookBeforeFill, set by tests only, runs once a download has its upstream answer,
// before its copy into the cache starts.
var hookBeforeFill func()

// startFetch begins the upstream download of d and the background copy into the
// cache, which outlives the request that started it. A blob too large to cache is
// returned to the leader to stream through; the others download their own.
//
// Of the instances sharing the index, one downloads a blob at a time (the lock
// "fetch/DIGEST", held until the copy ends): the others wait for it, then serve the
// blob it stored.
func (p *Proxy) startFetch(ctx context.Context, repo oci.Repository, d oci.Digest, bf *blobFetch) (io.ReadCloser, int64) {
	_, storedBefore, _ := p.local.store.HasBlob(d)
	// The wait is bounded: past it (a slow download elsewhere, or an instance that
	// died holding the lock) this instance downloads the blob itself.
	wctx, cancel := context.WithTimeout(ctx, fetchLockWait)
	_, unlock, err := p.local.store.Lock(wctx, "fetch/"+string(d))
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		p.log.Warn("another instance's download of the blob takes long: downloading it here too", "digest", d)
		unlock, err = nil, nil
	}
	finish := func() {
		if unlock != nil {
			unlock()
		}
		p.mu.Lock()
		if p.fetches[d] == bf { // not yet replaced by another repository's (fetchBlob)
			delete(p.fetches, d)
		}
		p.mu.Unlock()
	}
	if err == nil && !storedBefore {
		if _, ok, _ := p.local.store.HasBlob(d); ok {
			err = errStoredMeanwhile
		}
	}
	// Counted from before the upstream is asked, not from the copy's start: Close must
	// not return (and the store close) between the upstream's answer and the copy.
	if err == nil && !p.beginFill() {
		err = fmt.Errorf("%w: proxy %s closed", upstream.ErrUnavailable, p.name)
	}
	if err != nil {
		bf.err = err
		close(bf.ready)
		finish()
		return nil, 0
	}
	body, size, err := p.up.GetBlob(p.life, string(repo), d)
	if err == nil && p.opts.MaxSize > 0 && size > p.opts.MaxSize {
		p.endFill() // the leader streams it, uncached
		bf.err = errTooLarge
		close(bf.ready)
		finish()
		return newVerifiedBody(body, d), size
	}
	var f *cache.Fetch
	if err == nil {
		if f, err = p.local.store.NewFetch(p.life, d, size, p.opts.MaxSize); err != nil {
			body.Close()
		}
	}
	bf.fetch, bf.err = f, err
	close(bf.ready)
	if err != nil {
		p.endFill()
		finish()
		return nil, 0
	}
	if hookBeforeFill != nil {
		hookBeforeFill()
	}
	go func() {
		defer p.endFill()
		start := p.opts.Now()
		err := f.Fill(body, p.name, string(repo))
		body.Close()
		// From now on a request finds the blob stored, or (the download failed) starts
		// a download of its own instead of joining this one's failure.
		finish()
		bf.fillErr = err
		close(bf.filled)
		if err != nil {
			p.log.Warn("upstream blob not cached", "repo", repo, "digest", d, "err", err)
			return
		}
		p.log.Info("cached upstream blob", "repo", repo, "digest", d, "bytes", size, "seconds", p.opts.Now().Sub(start).Seconds())
	}()
	return nil, 0
}

// verifiedBody passes on a blob streamed from the upstream without being cached,
// holding back its last byte until the whole has matched its digest: a client never
// receives a complete body of corrupt content.
type verifiedBody struct {
	src  io.ReadCloser
	d    oci.Digest
	h    hash.Hash
	last byte
	held bool  // last is read and not yet passed on
	err  error // how the stream ended (io.EOF once verified)
}

func newVerifiedBody(src io.ReadCloser, d oci.Digest) *verifiedBody {
	return &verifiedBody{src: src, d: d, h: d.Algorithm().New()}
}

func (v *verifiedBody) Read(p []byte) (int, error) {
	if v.err != nil {
		if v.err == io.EOF && v.held && len(p) > 0 {
			p[0], v.held = v.last, false
			return 1, io.EOF
		}
		if v.err == io.EOF && v.held {
			return 0, nil
		}
		return 0, v.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := v.src.Read(p)
	v.h.Write(p[:n])
	if n > 0 {
		// Pass on the held byte and all but the last one read; hold that.
		last := p[n-1]
		if v.held {
			copy(p[1:n], p[:n-1])
			p[0] = v.last
		} else {
			n--
		}
		v.last, v.held = last, true
	}
	switch {
	case err == io.EOF:
		if got := oci.FromHash(v.d.Algorithm(), v.h); got != v.d {
			v.err = fmt.Errorf("%w: %s streamed from the upstream hashes to %s", upstream.ErrCorrupt, v.d, got)
			return n, v.err
		}
		v.err = io.EOF
		if v.held && n < len(p) {
			p[n], v.held = v.last, false
			n++
			return n, io.EOF
		}
		return n, nil
	case err != nil:
		v.err = err
		return n, err
	}
	return n, nil
}

func (v *verifiedBody) Close() error { return v.src.Close() }

func (p *Proxy) GetManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	m, err := p.manifest(ctx, repo, ref)
	if err == nil {
		p.local.store.RecordPull(p.name, string(repo), string(ref.Tag), m.Digest)
	}
	return m, err
}

func (p *Proxy) HeadManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	return p.manifest(ctx, repo, ref)
}

// manifest serves manifests by digest from cache (fetching them once), and tags from
// cache while they are fresh; stale tags are revalidated with a HEAD upstream and
// served from cache, with a warning, when the upstream cannot be asked. An upstream
// "not found" is remembered for NegativeTTL, whether or not a stale copy is cached.
func (p *Proxy) manifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, error) {
	m, fetched, err := p.resolveManifest(ctx, repo, ref)
	if err == nil && fetched {
		p.stats.ManifestMisses.Add(1)
	} else if err == nil {
		p.stats.ManifestHits.Add(1)
	}
	return m, err
}

// resolveManifest answers manifest, saying whether it was downloaded.
func (p *Proxy) resolveManifest(ctx context.Context, repo oci.Repository, ref oci.Reference) (*cache.StoredManifest, bool, error) {
	local, lerr := p.local.HeadManifest(ctx, repo, ref)
	if ref.IsDigest() {
		if lerr == nil {
			return local, false, nil
		}
		m, err := p.fetchManifest(ctx, repo, string(ref.Digest), "")
		if err != nil {
			return nil, false, p.upstreamError(err, oci.ErrManifestUnknown, "manifest "+string(repo)+"@"+string(ref.Digest))
		}
		return m, true, nil
	}
	key := string(repo) + "\x00" + string(ref.Tag)
	if lerr == nil && p.isFresh(key) {
		return local, false, nil
	}
	if p.isNegative(key) {
		return nil, false, oci.ErrManifestUnknown.Withf("manifest %s:%s not found upstream (cached answer)", repo, ref.Tag)
	}
	v, err, _ := p.manifests.Do("head\x00"+key, func() (any, error) {
		return p.up.HeadManifest(p.life, string(repo), string(ref.Tag))
	})
	if err != nil {
		if lerr == nil && servableFromCache(err) {
			return p.staleTag(local, repo, ref.Tag, err), false, nil
		}
		if isNotFound(err) {
			p.setNegative(key)
		}
		return nil, false, p.upstreamError(err, oci.ErrManifestUnknown, "manifest "+string(repo)+":"+string(ref.Tag))
	}
	head := v.(*upstream.Manifest)
	if lerr == nil && head.Digest != "" && head.Digest == local.Digest {
		p.markFresh(key)
		return local, false, nil
	}
	fetchRef := string(head.Digest)
	if fetchRef == "" {
		fetchRef = string(ref.Tag)
	}
	m, err := p.fetchManifest(ctx, repo, fetchRef, ref.Tag)
	if err != nil {
		// The HEAD got through but the GET did not (or the upstream answers HEADs
		// without the digest, so the GET was the revalidation).
		if lerr == nil && servableFromCache(err) {
			return p.staleTag(local, repo, ref.Tag, err), false, nil
		}
		return nil, false, p.upstreamError(err, oci.ErrManifestUnknown, "manifest "+string(repo)+"@"+fetchRef)
	}
	return m, true, nil
}

// staleTag serves the cached copy of a tag the upstream could not revalidate, with a
// warning.
func (p *Proxy) staleTag(local *cache.StoredManifest, repo oci.Repository, tag oci.Tag, err error) *cache.StoredManifest {
	p.log.Warn("upstream unavailable; serving cached tag", "repo", repo, "tag", tag, "err", err)
	local.Warning = fmt.Sprintf("upstream %s unavailable; serving the cached %s:%s", p.up.Host(), repo, tag)
	return local
}

// fetchManifest downloads a manifest, caches it (tagged when tag is set) and returns
// it, or the upstream's error (for upstreamError).
func (p *Proxy) fetchManifest(ctx context.Context, repo oci.Repository, ref string, tag oci.Tag) (*cache.StoredManifest, error) {
	negKey := string(repo) + "\x00" + ref
	if p.isNegative(negKey) {
		return nil, oci.ErrManifestUnknown.Withf("manifest %s@%s not found upstream (cached answer)", repo, ref)
	}
	v, err, _ := p.manifests.Do("get\x00"+negKey+"\x00"+string(tag), func() (any, error) {
		m, err := p.up.GetManifest(p.life, string(repo), ref)
		if err != nil {
			return nil, err
		}
		parsed, err := oci.ParseManifest(m.MediaType, m.Content)
		if err != nil {
			return nil, fmt.Errorf("upstream manifest %s@%s: %w", repo, ref, err)
		}
		var tags []oci.Tag
		if tag != "" {
			tags = []oci.Tag{tag}
		}
		if err := p.local.store.PutManifest(p.life, cache.PutManifestRequest{
			Registry: p.name, Repo: string(repo), Digest: m.Digest, Content: m.Content,
			Manifest: parsed, Tags: tags, AllowSparse: true,
		}); err != nil {
			return nil, err
		}
		if tag != "" {
			p.markFresh(string(repo) + "\x00" + string(tag))
		}
		return &cache.StoredManifest{Digest: m.Digest, MediaType: parsed.MediaType, Content: m.Content}, nil
	})
	if err != nil {
		if isNotFound(err) {
			p.setNegative(negKey)
		}
		return nil, err
	}
	m := *v.(*cache.StoredManifest)
	return &m, nil
}

func (p *Proxy) isFresh(key string) bool {
	at, ok := p.fresh.Get(key)
	return ok && p.opts.Now().Sub(at) < p.opts.TagTTL
}

func (p *Proxy) markFresh(key string) { p.fresh.Add(key, p.opts.Now()) }

func (p *Proxy) isNegative(key string) bool {
	until, ok := p.negative.Get(key)
	if ok && p.opts.Now().After(until) {
		p.negative.Remove(key)
		return false
	}
	return ok
}

func (p *Proxy) setNegative(key string) {
	if p.opts.NegativeTTL > 0 {
		p.negative.Add(key, p.opts.Now().Add(p.opts.NegativeTTL))
	}
}

func isNotFound(err error) bool {
	var se *upstream.StatusError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// servableFromCache reports whether a failed revalidation may fall back to the cached
// copy: the upstream is down, failing or rate limiting, not saying the tag is gone.
func servableFromCache(err error) bool {
	var se *upstream.StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusTooManyRequests
	}
	return errors.Is(err, upstream.ErrUnavailable)
}

// upstreamError turns an upstream failure into the registry error the client gets.
func (p *Proxy) upstreamError(err error, unknown *oci.Code, what string) error {
	var se *upstream.StatusError
	switch {
	case errors.As(err, &se):
		switch se.Status {
		case http.StatusNotFound:
			return unknown.Withf("%s not found upstream at %s", what, p.up.Host())
		case http.StatusUnauthorized:
			return oci.ErrUnauthorized.Withf("upstream %s refused dockyard's credentials for %s: %s", p.up.Host(), what, se.Message)
		case http.StatusForbidden:
			return oci.ErrDenied.Withf("upstream %s denied access to %s: %s", p.up.Host(), what, se.Message)
		case http.StatusTooManyRequests:
			e := oci.ErrTooManyRequests.Withf("upstream %s is rate limiting: %s", p.up.Host(), se.Message)
			e.RetryAfter = se.RetryAfter
			return e
		}
		return oci.ErrUpstreamUnavailable.Withf("upstream %s answered %d for %s: %s", p.up.Host(), se.Status, what, se.Message)
	case errors.Is(err, upstream.ErrUnavailable):
		var fe *upstream.FailingError
		if errors.As(err, &fe) && fe.RetryAfter != "" {
			// Passed on: the client waits as long as the upstream asked, instead of
			// asking again at once.
			e := oci.ErrUpstreamRetryLater.Withf("%s is not cached and upstream %s is unavailable: %v", what, p.up.Host(), err)
			e.RetryAfter = fe.RetryAfter
			return e
		}
		return oci.ErrUpstreamUnavailable.Withf("%s is not cached and upstream %s is unavailable: %v", what, p.up.Host(), err)
	case errors.Is(err, upstream.ErrCorrupt), errors.Is(err, cache.ErrCorrupt):
		return oci.ErrUpstreamUnavailable.Withf("upstream %s sent corrupt content for %s", p.up.Host(), what)
	}
	return err
}

// Tags lists the upstream's tags, or the cached ones when the upstream is unavailable.
func (p *Proxy) Tags(ctx context.Context, repo oci.Repository, last string, n int) ([]string, bool, error) {
	tags, more, err := p.up.Tags(ctx, string(repo), last, n)
	if err == nil {
		return tags, more, nil
	}
	if servableFromCache(err) {
		p.log.Warn("upstream unavailable; listing cached tags", "repo", repo, "err", err)
		return p.local.Tags(ctx, repo, last, n)
	}
	return nil, false, p.upstreamError(err, oci.ErrNameUnknown, "repository "+string(repo))
}

// Catalog lists the cached repositories (upstreams such as Docker Hub have no catalog).
func (p *Proxy) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	return p.local.Catalog(ctx, last, n)
}

// upstreamReferrers is an upstream's referrers list for one subject, and when it was
// read.
type upstreamReferrers struct {
	at   time.Time
	list []oci.Descriptor
}

// maxRememberedReferrers bounds the subjects whose upstream referrers a proxy
// remembers, and maxRememberedList the list it remembers for one.
const (
	maxRememberedReferrers = 4096
	maxRememberedList      = 1000
)

func mustReferrersLRU() *lru.Cache[string, upstreamReferrers] {
	c, _ := lru.New[string, upstreamReferrers](maxRememberedReferrers)
	return c
}

// Referrers lists the upstream's referrers together with cached ones. The upstream's
// list is remembered for TagTTL, as a tag is, and served past it while the upstream
// cannot be asked.
func (p *Proxy) Referrers(ctx context.Context, repo oci.Repository, d oci.Digest) ([]oci.Descriptor, error) {
	local, err := p.local.Referrers(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	k := string(repo) + "\x00" + string(d)
	known, ok := p.referrers.Get(k)
	if ok && p.opts.Now().Sub(known.at) < p.opts.TagTTL {
		return mergeDescriptors(local, known.list), nil
	}
	remote, err := p.up.Referrers(ctx, string(repo), d)
	if err != nil {
		p.log.Warn("upstream referrers unavailable; listing cached ones", "repo", repo, "err", err)
		return mergeDescriptors(local, known.list), nil
	}
	if len(remote) <= maxRememberedList {
		p.referrers.Add(k, upstreamReferrers{at: p.opts.Now(), list: remote})
	}
	return mergeDescriptors(local, remote), nil
}

// mergeDescriptors concatenates lists of descriptors, each digest once.
func mergeDescriptors(lists ...[]oci.Descriptor) []oci.Descriptor {
	seen := map[oci.Digest]bool{}
	out := []oci.Descriptor{}
	for _, l := range lists {
		for _, d := range l {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				out = append(out, d)
			}
		}
	}
	return out
}
