package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dustin/go-humanize"
	lru "github.com/hashicorp/golang-lru/v2"

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

// manifestCache keeps small manifests' bytes by digest, up to a total size. Content is
// immutable: entries never go stale, they only make room.
type manifestCache struct {
	max, maxEntry int64
	used          atomic.Int64
	entries       *lru.Cache[oci.Digest, []byte]
}

func newManifestCache(bytes int64) *manifestCache {
	c := &manifestCache{max: bytes, maxEntry: min(64<<10, bytes)}
	c.entries, _ = lru.NewWithEvict[oci.Digest, []byte](1<<20, func(_ oci.Digest, v []byte) { c.used.Add(-int64(len(v))) })
	return c
}

func (c *manifestCache) get(d oci.Digest) ([]byte, bool) { return c.entries.Get(d) }

func (c *manifestCache) add(d oci.Digest, b []byte) {
	if int64(len(b)) > c.maxEntry || c.max <= 0 {
		return
	}
	if c.entries.Contains(d) {
		return
	}
	c.used.Add(int64(len(b)))
	c.entries.Add(d, b)
	for c.used.Load() > c.max {
		if _, _, ok := c.entries.RemoveOldest(); !ok {
			return
		}
	}
}

func (c *manifestCache) remove(d oci.Digest) { c.entries.Remove(d) }

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
		return oci.ErrTooManyRequests.Withf("%s has %d uploads open, the most one client may have (limits.upload_sessions_per_client); finish or cancel some", client, s.open[client])
	}
	s.open[client]++
	return nil
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

// spaceCheckEvery is how many bytes a copy writes between free-space checks.
const spaceCheckEvery = 16 << 20

// checkSpace refuses new data when the data directory's filesystem is below the
// reserve.
func (s *Store) checkSpace() error {
	if s.minFree <= 0 {
		return nil
	}
	free, err := s.freeSpace()
	if err != nil {
		return fmt.Errorf("free space of the data directory: %w", err)
	}
	if free < s.minFree {
		return oci.ErrStorageFull.Withf("the registry's storage is full: %s free, under the %s reserve (storage.min_free_space)",
			humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(s.minFree)))
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
