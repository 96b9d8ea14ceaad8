package cache

import (
	clist "container/list"
	"context"
	"errors"
	"fmt"
	"sync"

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

// diskRoom is the free space writes of new content (uploads, manifests) leave on one
// filesystem. They reserve their bytes in the filesystem's account (index.Space)
// before writing them: what writers in flight hold counts, so a burst of them cannot
// take the filesystem under the floor that each alone would have kept. The writes
// that free space are not held to it.
type diskRoom struct {
	space *index.Space
	floor int64
	full  string // what is full: "the registry's storage is full"
	kept  string // what the floor is, after its size: "reserve (storage.min_free_space)"
}

// rooms makes the rooms of the data directory's filesystem and of the index's. A
// Badger index keeps a reserve on its filesystem (see index.Badger): new content
// there leaves it twice that, its reserve and as much again above it for the writes
// that free space (deletes, collections), and storage.min_free_space too when the
// data directory shares the filesystem.
func rooms(dir string, space *index.Space, minFree int64, db index.DB) (blobRoom, indexRoom *diskRoom) {
	d, onDisk := db.(index.OnDisk)
	if space == nil {
		return nil, nil
	}
	if onDisk && index.SameFilesystem(dir, d.Dir()) {
		room := &diskRoom{space: space, floor: minFree + 2*d.Reserve(), full: "the registry's storage is full",
			kept: fmt.Sprintf("reserve (storage.min_free_space %s, and %s kept for the index)", index.SizeUp(minFree), index.SizeUp(2*d.Reserve()))}
		return room, room
	}
	if minFree > 0 {
		blobRoom = &diskRoom{space: space, floor: minFree, full: "the registry's storage is full", kept: "reserve (storage.min_free_space)"}
	}
	if onDisk && d.Space() != nil {
		indexRoom = &diskRoom{space: d.Space(), floor: 2 * d.Reserve(), full: "the registry's index storage is full",
			kept: fmt.Sprintf("kept for the index (its reserve of %s, and as much again for the writes that free space)", index.SizeUp(d.Reserve()))}
	}
	return blobRoom, indexRoom
}

// hold reserves n bytes, or refuses them with ErrStorageFull; give gives them back.
func (r *diskRoom) hold(n int64) error {
	if r == nil {
		return nil
	}
	short, err := r.space.Reserve(n, r.floor)
	if err != nil {
		return fmt.Errorf("measure free space: %w", err)
	}
	if short != nil {
		return oci.ErrStorageFull.Withf("%s: %s", r.full, short.Describe(r.kept))
	}
	return nil
}

func (r *diskRoom) give(n int64) {
	if r != nil {
		r.space.Give(n)
	}
}

// checkSpace refuses new blob data when the data directory's filesystem is at its
// floor (blobRoom).
func (s *Store) checkSpace() error { return s.blobRoom.hold(0) }

// manifestBytes is what a manifest push holds besides the manifest's bytes: its
// records (tags, references, the repository's), a few KiB.
const manifestBytes = 16 << 10

// holdManifest holds room for a manifest of size bytes on the index's filesystem;
// give gives it back once the manifest is written (or refused).
func (s *Store) holdManifest(size int64) (give func(), err error) {
	n := size + manifestBytes
	if err := s.indexRoom.hold(n); err != nil {
		return nil, err
	}
	return func() { s.indexRoom.give(n) }, nil
}

// reserveStep is how far ahead of its writes a blob writer holds room: what each
// writer in flight may hold without writing it. Checks cost a statfs each
// (microseconds) against a millisecond for a MiB of disk writes.
const reserveStep = 1 << 20

// spaceWriter holds room for what it writes, reserveStep at a time, and gives each
// write's bytes back once written (the filesystem counts them then); done gives back
// what is left.
type spaceWriter struct {
	w     interface{ Write([]byte) (int, error) }
	s     *Store
	ahead int64 // held and not yet written
}

func (w *spaceWriter) Write(p []byte) (int, error) {
	if need := int64(len(p)) - w.ahead; need > 0 {
		step := max(need, reserveStep)
		if err := w.s.blobRoom.hold(step); err != nil {
			return 0, err
		}
		w.ahead += step
	}
	n, err := w.w.Write(p)
	w.ahead -= int64(len(p))
	w.s.blobRoom.give(int64(len(p)))
	return n, err
}

func (w *spaceWriter) done() {
	w.s.blobRoom.give(w.ahead)
	w.ahead = 0
}
