package cache

import (
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/dockyard/dockyard/oci"
)

// tagCache keeps recently read tags in memory so that a manifest GET by tag is a
// memory hit. It never keeps a stale entry past the change: every transaction that
// changes tags invalidates them right after it commits, and a reader only fills the
// cache when no invalidation happened while it read the index. Between a commit and
// its invalidation a reader may still get the old value, as it would had it read a
// moment earlier; it is per process, so other instances sharing an index need their own
// invalidation.
type tagCache struct {
	// off: the index is shared with other instances, whose changes this one would
	// not see invalidated; every read goes to the index.
	off     bool
	entries *lru.Cache[string, tagEntry]
	mu      sync.Mutex // orders fills against invalidations
	gen     uint64     // invalidations so far; guarded by mu
}

type tagEntry struct {
	digest    oci.Digest
	mediaType string
}

func newTagCache(size int) *tagCache {
	c, _ := lru.New[string, tagEntry](size)
	return &tagCache{entries: c}
}

func (c *tagCache) get(k []byte) (tagEntry, bool) {
	if c.off {
		return tagEntry{}, false
	}
	return c.entries.Get(string(k))
}

// generation is read before a reader looks a tag up in the index.
func (c *tagCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// fill records what the index said, unless tags changed since generation gen.
func (c *tagCache) fill(k []byte, gen uint64, e tagEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen && !c.off {
		c.entries.Add(string(k), e)
	}
}

// invalidate drops tags after a transaction that changed them has committed.
func (c *tagCache) invalidate(keys ...[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, k := range keys {
		c.entries.Remove(string(k))
	}
}
