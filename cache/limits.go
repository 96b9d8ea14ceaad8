package cache

import (
	clist "container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dustin/go-humanize"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// The store's memory and disk are bounded: copy buffers shared by uploads and proxy
// fills, the manifest bytes kept in memory, open upload sessions per client, and a
// free-space reserve under which uploads are refused.

const (
	copyBufSize      = 256 << 10
	copyBufsInFlight = 4 // per copy: reading one while hashing and writing others
	// smallBufSize is what a copy uses when the pool has no buffer left for it.
	smallBufSize = 64 << 10
)

// bufferPool hands out aligned copy buffers, at most max of them in all. A copy takes
// up to copyBufsInFlight while it runs; when the pool is exhausted (slow clients holding
// theirs) a copy goes on with what it got, or one small buffer of its own, rather than
// waiting.
type bufferPool struct {
	max  int
	mu   sync.Mutex
	made int
	free []*[]byte
}

func newBufferPool(bytes int64) *bufferPool {
	return &bufferPool{max: int(max(bytes/copyBufSize, 0))}
}

// take returns up to n buffers, maybe none.
func (p *bufferPool) take(n int) []*[]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*[]byte
	for len(out) < n && len(p.free) > 0 {
		out = append(out, p.free[len(p.free)-1])
		p.free = p.free[:len(p.free)-1]
	}
	for len(out) < n && p.made < p.max {
		b := alignedBuffer(copyBufSize)
		out = append(out, &b)
		p.made++
	}
	return out
}

func (p *bufferPool) give(bufs []*[]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, bufs...)
}

// inUse is how many buffers are taken (for tests).
func (p *bufferPool) inUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.made - len(p.free)
}

// manifestCache keeps small manifests' bytes by digest, up to a total size that counts
// what each entry costs besides its bytes, so tiny manifests cannot fill memory by the
// million. Content is immutable: entries never go stale, they only make room. One lock
// covers an entry and its accounting: pulls racing to cache the same manifest count
// it once.
type manifestCache struct {
	max, maxEntry int64
	mu            sync.Mutex
	used          int64
	order         *clist.List // of *manifestEntry, most recently used first
	byDigest      map[oci.Digest]*clist.Element
}

type manifestEntry struct {
	d oci.Digest
	b []byte
}

// manifestEntryCost is what an entry takes beyond its bytes and digest: the list
// element, the map's share and the headers (measured near 100 bytes; counted high to
// cover allocation rounding).
const manifestEntryCost = 256

func newManifestCache(bytes int64) *manifestCache {
	return &manifestCache{max: bytes, maxEntry: min(64<<10, bytes), order: clist.New(), byDigest: map[oci.Digest]*clist.Element{}}
}

func entryCost(d oci.Digest, b []byte) int64 { return int64(len(d)+len(b)) + manifestEntryCost }

func (c *manifestCache) get(d oci.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byDigest[d]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*manifestEntry).b, true
}

func (c *manifestCache) add(d oci.Digest, b []byte) {
	cost := entryCost(d, b)
	if int64(len(b)) > c.maxEntry || cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byDigest[d]; ok {
		return
	}
	c.byDigest[d] = c.order.PushFront(&manifestEntry{d, b})
	c.used += cost
	for c.used > c.max {
		c.drop(c.order.Back())
	}
}

func (c *manifestCache) remove(d oci.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byDigest[d]; ok {
		c.drop(e)
	}
}

// drop removes an entry; call with mu held.
func (c *manifestCache) drop(e *clist.Element) {
	me := c.order.Remove(e).(*manifestEntry)
	delete(c.byDigest, me.d)
	c.used -= entryCost(me.d, me.b)
}

// size and len report the bytes counted and the entries held (for tests).
func (c *manifestCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

func (c *manifestCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// clientKey carries, in a context, who an upload is for.
type clientKey struct{}

// WithClient tells the store who is asking (the user, or the address of an anonymous
// client), for the limit of open upload sessions per client.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

func clientOf(ctx context.Context) string {
	c, _ := ctx.Value(clientKey{}).(string)
	return c
}

// sessions counts open upload sessions per client.
type sessions struct {
	max  int // 0: no limit
	mu   sync.Mutex
	open map[string]int
}

// acquire counts one more session of client, or refuses when it has max open.
func (s *sessions) acquire(client string) error {
	if client == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.open[client] >= s.max {
		return tooManySessions(client, s.open[client])
	}
	s.open[client]++
	return nil
}

// check refuses a new session of client when the index holds max of its sessions
// (a shared index: instances count there).
func (s *sessions) check(txn index.Txn, client string) error {
	n := 0
	err := txn.Scan(key(kindClientUpload, client, ""), nil, true, func(_, _ []byte) error {
		if n++; n >= s.max {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if n >= s.max {
		return tooManySessions(client, n)
	}
	return nil
}

// sessionsRetryAfter is the Retry-After, in seconds, of a client at its limit of open
// uploads: time for some of its uploads in flight to finish.
const sessionsRetryAfter = "30"

func tooManySessions(client string, n int) error {
	e := oci.ErrTooManyRequests.Withf("%s has %d uploads open, the most one client may have (limits.upload_sessions_per_client); finish or cancel some", client, n)
	e.RetryAfter = sessionsRetryAfter
	return e
}

func (s *sessions) release(client string) {
	if client == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[client]--; s.open[client] <= 0 {
		delete(s.open, client)
	}
}

// spaceCheckEvery is how many bytes a copy writes between free-space checks: what
// each upload may write past the reserve (a statfs costs microseconds, a MiB of disk
// writes a millisecond).
const spaceCheckEvery = 1 << 20

// checkSpace refuses new data when the data directory's filesystem is below the
// reserve: storage.min_free_space, and, when the index keeps its files there, the
// room it needs (a Badger index refuses its own writes under half of it, and a full
// disk under Badger would kill the process).
func (s *Store) checkSpace() error {
	reserve := s.minFree + s.indexRoom
	if reserve <= 0 {
		return nil
	}
	free, err := s.freeSpace()
	if err != nil {
		return fmt.Errorf("free space of the data directory: %w", err)
	}
	if free < reserve {
		why := "storage.min_free_space"
		if s.indexRoom > 0 {
			why = fmt.Sprintf("storage.min_free_space %s, and %s kept for the index", humanize.IBytes(uint64(s.minFree)), humanize.IBytes(uint64(s.indexRoom)))
		}
		return oci.ErrStorageFull.Withf("the registry's storage is full: %s free, under the %s reserve (%s)",
			humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(reserve)), why)
	}
	return nil
}

// spaceWriter checks the reserve every spaceCheckEvery bytes written through it.
type spaceWriter struct {
	w     interface{ Write([]byte) (int, error) }
	s     *Store
	since int64
}

func (w *spaceWriter) Write(p []byte) (int, error) {
	if w.since += int64(len(p)); w.since >= spaceCheckEvery {
		w.since = 0
		if err := w.s.checkSpace(); err != nil {
			return 0, err
		}
	}
	return w.w.Write(p)
}
