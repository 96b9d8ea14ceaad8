package cache

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Store is dockyard's storage: blob bytes in a BlobStore and everything else in a
// Badger index. Registries and repositories are namespaces inside it; blob bytes are
// shared by all of them.
type Store struct {
	dir   string
	db    index.DB
	blobs blobstore.Store
	// redirect, when set, hands out presigned URLs for blob GETs.
	redirect blobstore.Redirector
	log      *slog.Logger
	now      func() time.Time

	// locks serialise, across every instance sharing the index, the chunks of one
	// upload (lock "upload/ID") and committing a blob's bytes with deleting them (GC;
	// lock "blob/DIGEST").
	locks    index.Locker
	contents *manifestCache
	tags     *tagCache
	// configs remembers image configurations read for search details, by digest
	// (content-addressed: never stale).
	configs  *lru.Cache[oci.Digest, *imageConfig]
	buffers  *bufferPool
	sessions sessions
	// accessories says which tags are accessories and whether they follow a deleted
	// subject (accessories.go).
	accessories atomic.Pointer[accessorySettings]
	// blobRoom is the free space new blob data leaves on the data directory's
	// filesystem, indexRoom what new manifests leave on the index's: the same when
	// they share one; nil where nothing is kept (see limits.go).
	blobRoom, indexRoom *diskRoom
	// beforePurgeLock, when set (tests), runs as a purge is about to take the lock of
	// a session it found stale.
	beforePurgeLock func(id string)

	access      accessLog
	stopFlusher context.CancelFunc
	flusherDone chan struct{}
}

// Options configure a Store.
type Options struct {
	// Dir holds the index (Dir/index), and the blob files unless Blobs is set.
	Dir string
	// Index is the index (default: Badger under Dir/index). The store closes it.
	Index index.DB
	// Blobs is where blob bytes are kept (default: the filesystem under Dir).
	Blobs  blobstore.Store
	Logger *slog.Logger
	// Now is the clock; tests inject one. Defaults to time.Now.
	Now func() time.Time
	// AccessFlushInterval is how often pull records are written (default 5s).
	AccessFlushInterval time.Duration
	// MemTableSize is the index's memtable size (default 16 MiB); it also bounds one
	// transaction (15% of it). Tests make it small to reach that bound.
	MemTableSize int64
	// UploadBuffers bounds the memory of copy buffers shared by uploads and proxy
	// fills (default 64 MiB).
	UploadBuffers int64
	// ManifestCache bounds the manifest bytes kept in memory (default 32 MiB).
	ManifestCache int64
	// MaxSessionsPerClient bounds the open upload sessions of one client (0: none).
	MaxSessionsPerClient int
	// MinFreeSpace is the free space under which uploads, and manifests when the index
	// keeps its files on the same filesystem (index.OnDisk), are refused (0: none);
	// they leave such an index room too (see rooms).
	MinFreeSpace int64
	// FreeSpace measures the free space of the data directory's filesystem (default:
	// statfs on Linux; elsewhere none, and no reserve is kept); tests inject one. An
	// index the store opens itself on that filesystem measures with it too (one
	// passed in Index keeps its own account).
	FreeSpace func() (int64, error)
}

// Open opens (creating if needed) the store under opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	blobs := opts.Blobs
	if blobs == nil {
		fs, err := blobstore.NewFS(opts.Dir)
		if err != nil {
			return nil, err
		}
		blobs = fs
	}
	spool := filepath.Join(opts.Dir, "spool")
	if err := os.RemoveAll(spool); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spool, 0o755); err != nil {
		return nil, err
	}
	if opts.FreeSpace == nil {
		opts.FreeSpace = index.DiskFree(opts.Dir)
	}
	if opts.FreeSpace == nil && opts.MinFreeSpace > 0 {
		opts.Logger.Warn("the free-space reserve (storage.min_free_space) is not kept on this platform")
		opts.MinFreeSpace = 0
	}
	space := index.NewSpace(opts.FreeSpace)
	db := opts.Index
	if db == nil {
		dir := filepath.Join(opts.Dir, "index")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		bopts := index.BadgerOptions{Dir: dir, Logger: opts.Logger, MemTableSize: opts.MemTableSize}
		if index.SameFilesystem(opts.Dir, dir) {
			// One account for the filesystem: what uploads hold, the index sees, and
			// the other way round.
			bopts.Space = space
		}
		b, err := index.OpenBadger(bopts)
		if err != nil {
			return nil, err
		}
		db = b
	}
	if opts.AccessFlushInterval <= 0 {
		opts.AccessFlushInterval = 5 * time.Second
	}
	if opts.UploadBuffers <= 0 {
		opts.UploadBuffers = 64 << 20
	}
	if opts.ManifestCache <= 0 {
		opts.ManifestCache = 32 << 20
	}
	s := &Store{dir: opts.Dir, db: db, blobs: blobs, log: opts.Logger, now: opts.Now,
		contents: newManifestCache(opts.ManifestCache), tags: newTagCache(16384), buffers: newBufferPool(opts.UploadBuffers),
		sessions: sessions{max: opts.MaxSessionsPerClient, open: map[string]int{}}, locks: index.LockerOf(db)}
	s.blobRoom, s.indexRoom = rooms(opts.Dir, space, opts.MinFreeSpace, db)
	s.configs, _ = lru.New[oci.Digest, *imageConfig](maxRememberedConfigs)
	s.tags.off = s.Shared()
	if r, ok := blobs.(blobstore.Redirector); ok && r.Redirects() {
		s.redirect = r
	}
	if err := s.upgrade(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.countSessions(); err != nil {
		db.Close()
		return nil, err
	}
	if c, ok := blobs.(blobstore.Claimer); ok {
		id, err := s.indexID()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err = c.Claim(ctx, id)
			cancel()
		}
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopFlusher, s.flusherDone = cancel, make(chan struct{})
	go s.flushAccessEvery(ctx, opts.AccessFlushInterval, s.flusherDone)
	return s, nil
}

// spoolDir is where fetches into a store that cannot share its upload files keep the
// bytes their readers follow (emptied at start: a spool outlives no process).
func (s *Store) spoolDir() string { return filepath.Join(s.dir, "spool") }

// Close writes pending access records, then flushes and closes the index.
func (s *Store) Close() error {
	s.stopFlusher()
	<-s.flusherDone
	return s.db.Close()
}

// update runs fn in a read-write transaction; the index runs it again when a
// concurrent transaction changed what fn read.
func (s *Store) update(fn func(txn index.Txn) error) error { return s.db.Update(fn) }

// updateFreeing is update for a write that frees space (a delete, a collection, a
// cancelled upload): an index keeping a reserve of free space takes it under the
// reserve, so that a full disk can be emptied through the registry (index.Freer).
func (s *Store) updateFreeing(fn func(txn index.Txn) error) error {
	return index.UpdateFreeing(s.db, fn)
}

func exists(txn index.Txn, k []byte) (bool, error) {
	_, err := txn.Get(k)
	if errors.Is(err, index.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// getValue returns a copy of the value at k, or ok=false.
func getValue(txn index.Txn, k []byte) (v []byte, ok bool, err error) {
	v, err = txn.Get(k)
	if errors.Is(err, index.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

func getJSON(txn index.Txn, k []byte, into any) (bool, error) {
	v, ok, err := getValue(txn, k)
	if !ok || err != nil {
		return ok, err
	}
	return true, json.Unmarshal(v, into)
}

func decodeJSON(v []byte, into any) error { return json.Unmarshal(v, into) }

func setJSON(txn index.Txn, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(k, b)
}

// addRef moves the reference count at k by delta, creating the record (with size)
// when it does not exist yet.
func (s *Store) addRef(txn index.Txn, k []byte, size, delta int64) error {
	var r refRecord
	v, ok, err := getValue(txn, k)
	if err != nil {
		return err
	}
	if ok {
		r = decodeRefRecord(v)
	} else {
		r.Size = size
	}
	r.Refs += delta
	if r.Refs < 0 {
		s.log.Error("reference count below zero; clamping", "key", string(k), "refs", r.Refs)
		r.Refs = 0
	}
	if r.Refs == 0 {
		if r.ZeroSince == 0 {
			r.ZeroSince = s.now().UnixNano()
		}
	} else {
		r.ZeroSince = 0
	}
	return txn.Set(k, r.encode())
}

// touchRepo records that a repository exists, for the catalog. It writes without
// reading: concurrent pushes to one repository do not conflict over it, and the GC
// transaction that drops empty repositories, which reads it, does.
func (s *Store) touchRepo(txn index.Txn, reg, repo string) error {
	return txn.Set(repoKey(reg, repo), []byte(s.now().UTC().Format(time.RFC3339)))
}

// RefCounts reports the reference count of a blob or manifest (for tests, fsck and
// garbage collection). ok is false when the index has no record of it.
func (s *Store) RefCounts(d oci.Digest) (blobRefs, manifestRefs int64, err error) {
	err = s.db.View(func(txn index.Txn) error {
		for _, p := range []struct {
			k   []byte
			dst *int64
		}{{blobKey(d), &blobRefs}, {contentRefsKey(d), &manifestRefs}} {
			v, ok, err := getValue(txn, p.k)
			if err != nil {
				return err
			}
			*p.dst = -1
			if ok {
				*p.dst = decodeRefRecord(v).Refs
			}
		}
		return nil
	})
	return blobRefs, manifestRefs, err
}

// Lock takes a named lock shared by every instance on the index (see index.Locker):
// the store's own are "upload/ID" and "blob/DIGEST". held is cancelled if the lock is
// lost; a step with an outside effect confirms it first (Holds).
func (s *Store) Lock(ctx context.Context, key string) (held context.Context, unlock func(), err error) {
	return s.locks.Lock(ctx, key)
}

// Holds confirms that the locks of held are still held (see index.Locker.Holds).
func (s *Store) Holds(held ...context.Context) bool { return s.locks.Holds(held...) }

// How long a request waits for a lock another holds. Requests are not cancelled when
// their client leaves, so every wait is bounded: an upload busy with another request
// (a client retrying while its first attempt still runs) is answered at once, a blob
// being committed or collected elsewhere within a minute.
const (
	uploadLockWait = 2 * time.Second
	blobLockWait   = time.Minute
)

// lockWithin takes key, waiting at most wait; then it answers busy.
func (s *Store) lockWithin(ctx context.Context, key string, wait time.Duration, busy error) (context.Context, func(), error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	held, unlock, err := s.locks.Lock(wctx, key)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, nil, busy
	}
	return held, unlock, err
}

func (s *Store) lockUpload(ctx context.Context, id string) (context.Context, func(), error) {
	busy := oci.ErrTooManyRequests.Withf("upload %s is busy with another request; try again", id)
	busy.RetryAfter = "1"
	return s.lockWithin(ctx, uploadLock(id), uploadLockWait, busy)
}

func (s *Store) lockBlob(ctx context.Context, d oci.Digest) (context.Context, func(), error) {
	return s.lockWithin(ctx, blobLock(d), blobLockWait,
		oci.ErrIndexUnavailable.Withf("blob %s is busy (being stored or collected elsewhere); try again", d))
}

// Ready asks the index and the blob store for an answer: nil each, or why not (also
// when ctx ends first).
func (s *Store) Ready(ctx context.Context) map[string]error {
	type answer struct {
		name string
		err  error
	}
	answers := make(chan answer, 2)
	go func() {
		_, err := index.GetOne(s.db, key(kindMeta, "ready-probe"))
		if errors.Is(err, index.ErrNotFound) {
			err = nil
		}
		answers <- answer{"index", err}
	}()
	go func() {
		_, err := s.blobs.Stat(ctx, oci.FromBytes(oci.SHA256, []byte("dockyard readiness probe")))
		if errors.Is(err, blobstore.ErrNotExist) {
			err = nil
		}
		answers <- answer{"storage", err}
	}()
	out := map[string]error{"index": errors.New("no answer in time"), "storage": errors.New("no answer in time")}
	for range 2 {
		select {
		case a := <-answers:
			out[a.name] = a.err
		case <-ctx.Done():
			return out
		}
	}
	return out
}

// Shared reports whether other instances share the index (PostgreSQL): what one
// keeps in memory of it may be changed by another at any time.
func (s *Store) Shared() bool {
	sh, ok := s.db.(index.Sharer)
	return ok && sh.Shared()
}

// Serve says, on an index other processes share, that this process serves it (offline
// commands that must run alone see it; see Alone).
func (s *Store) Serve() error {
	if p, ok := s.db.(index.Presence); ok {
		return p.Serve()
	}
	return nil
}

// Alone takes a shared index for the caller alone until release; ok is false while an
// instance serves it. An index no other process opens is the caller's already.
func (s *Store) Alone(ctx context.Context) (held context.Context, release func(), ok bool, err error) {
	if p, isShared := s.db.(index.Presence); isShared {
		return p.Alone(ctx)
	}
	return context.Background(), func() {}, true, nil
}

// TryLock takes a named lock if no instance holds it.
func (s *Store) TryLock(ctx context.Context, key string) (held context.Context, unlock func(), ok bool, err error) {
	return s.locks.TryLock(ctx, key)
}

func uploadLock(id string) string  { return "upload/" + id }
func blobLock(d oci.Digest) string { return "blob/" + string(d) }
