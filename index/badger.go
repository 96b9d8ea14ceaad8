package index

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/oci"
)

// BadgerOptions configure the embedded index.
type BadgerOptions struct {
	Dir    string
	Logger *slog.Logger
	// MemTableSize is the memtable size (default 16 MiB); it also bounds one
	// transaction (15% of it).
	MemTableSize int64
	// FreeSpace measures the free space of Dir's filesystem (default: statfs on Linux;
	// elsewhere none, and no room is kept); tests inject one.
	FreeSpace func() (int64, error)
	// Space is the account of Dir's filesystem, shared with the other writers on it
	// (default: one of the index's own, measured by FreeSpace).
	Space *Space
}

// Badger is the embedded index: Badger in a directory, every commit synced (a 201
// means the push is durable).
//
// Badger writes its log and its tables through memory maps of files it makes at
// their full size without allocating them, and a write into such a map that the
// filesystem has no room for kills the process (SIGBUS) instead of failing. So the
// index keeps a reserve of free space on its filesystem: a write is refused
// (oci.ErrStorageFull) before it reaches Badger when its bytes, with those of the
// writes admitted and not yet written, would take the free space under it, while
// reads go on; writes are taken again as soon as there is room, and nothing needs
// reopening, since Badger never met the full disk. Writes that free space (deletes,
// collections) may go under the reserve, down to a floor of half of it, so that an
// index that filled its disk can be emptied.
type Badger struct {
	db       *badger.DB
	log      *slog.Logger
	dir      string
	reserve  int64
	vlogFile int64  // the value log's file size
	space    *Space // nil: not measured
}

// OpenBadger opens (creating if needed) the index in o.Dir.
func OpenBadger(o BadgerOptions) (*Badger, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 16 << 20
	}
	vlogFile := max(1<<20, 4*o.MemTableSize)
	bopts := badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{o.Logger}).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		// Sized for a registry index (small values, modest write rate), keeping the
		// resident set small.
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(vlogFile).
		WithValueThreshold(min(64<<10, o.MemTableSize/32)).
		WithNumCompactors(2)
	if o.Space == nil {
		if o.FreeSpace == nil {
			o.FreeSpace = DiskFree(o.Dir)
		}
		o.Space = NewSpace(o.FreeSpace)
	}
	b := &Badger{log: o.Logger, dir: o.Dir, reserve: badgerReserve(o.MemTableSize), vlogFile: vlogFile, space: o.Space}
	if _, err := os.Stat(o.Dir); err == nil {
		// Opening writes too (a log, and the tables of the memtables a crash or a stop
		// left): what a flush and its compaction write, the floor's worth. Under it
		// Badger would die of it; above it the registry starts, and takes the writes
		// that free space.
		if _, err := b.room(0, b.Floor()); err != nil {
			return nil, fmt.Errorf("open index: %w", err)
		}
	}
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", full(err))
	}
	b.db = db
	return b, nil
}

// badgerReserve is the free space the index keeps for what Badger writes besides the
// bytes of the writes it is given (those are counted as they are admitted): four
// memtables' worth — the table a full memtable is flushed to and the compaction that
// flush starts (the floor, which the writes that free space may reach), and as much
// again above it for those writes.
func badgerReserve(memTable int64) int64 { return 4 * memTable }

// Dir is the directory the index writes to.
func (b *Badger) Dir() string { return b.dir }

// Reserve is the free space the index keeps on its filesystem.
func (b *Badger) Reserve() int64 { return b.reserve }

// Floor is the free space the index keeps under the writes that free space, and to
// open.
func (b *Badger) Floor() int64 { return b.reserve / 2 }

// Space is the account of the index's filesystem (nil: not measured).
func (b *Badger) Space() *Space { return b.space }

// room reserves n bytes for a write that must leave keep free, or refuses it; the
// caller calls give once the write returns. Where free space cannot be measured, the
// write goes ahead.
func (b *Badger) room(n, keep int64) (give func(), err error) {
	short, err := b.space.Reserve(n, keep)
	if err != nil {
		b.log.Warn("free space of the index's filesystem", "dir", b.dir, "err", err)
		return func() {}, nil
	}
	if short != nil {
		what := "the index keeps to write safely"
		if keep < b.reserve {
			what = "the index keeps under the writes that free space"
		}
		return nil, fmt.Errorf("%w (index in %s)", oci.ErrStorageFull.Withf("the registry's index storage is full: %s; free some space",
			short.Describe(what)), b.dir)
	}
	return func() { b.space.Give(n) }, nil
}

// full marks a failure for want of space as ErrStorageFull.
func full(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", oci.ErrStorageFull.Withf("the registry's index storage is full; free some space"), err)
	}
	return err
}

func (b *Badger) View(fn func(Txn) error) error {
	return b.db.View(func(txn *badger.Txn) error { return fn(&badgerTxn{txn: txn}) })
}

// Update retries conflicts (Badger's optimistic concurrency: a key fn read was
// changed by a transaction that committed first). Under the reserve it refuses.
func (b *Badger) Update(fn func(Txn) error) error { return b.update(fn, b.reserve, Attempts) }

// UpdateFreeing is Update for a write that frees space (see index.Freer): it may go
// under the reserve, down to the floor.
func (b *Badger) UpdateFreeing(fn func(Txn) error) error { return b.update(fn, b.Floor(), Attempts) }

// TryUpdate is Update (UpdateFreeing when freeing) giving up after attempts conflicts
// (index.Trier).
func (b *Badger) TryUpdate(fn func(Txn) error, freeing bool, attempts int) error {
	if freeing {
		return b.update(fn, b.Floor(), attempts)
	}
	return b.update(fn, b.reserve, attempts)
}

func (b *Badger) update(fn func(Txn) error, keep int64, attempts int) error {
	// Refused at once when even an empty write would not fit, before fn's work.
	if _, err := b.room(0, keep); err != nil {
		return err
	}
	err := retry(attempts, func() error { return b.commit(fn, keep) },
		func(err error) bool { return errors.Is(err, badger.ErrConflict) })
	return full(tooBig(err))
}

// commit runs fn in a transaction and commits it if its bytes fit, holding them in
// the account until Badger has written them.
func (b *Badger) commit(fn func(Txn) error, keep int64) error {
	txn := b.db.NewTransaction(true)
	defer txn.Discard()
	t := &badgerTxn{txn: txn}
	if err := fn(t); err != nil {
		return err
	}
	if t.writes == 0 {
		return txn.Commit() // nothing to write (a commit checks conflicts only)
	}
	give, err := b.room(t.bytes+commitBytes, keep)
	if err != nil {
		return err
	}
	defer give()
	return txn.Commit()
}

// What a write costs Badger's files, at most: an entry (header, key with its
// version, value, checksum) in the write-ahead log, and again in the value log for a
// value too big for the tree (a pointer then in the log: counted as a second key);
// a commit adds a marker entry, and each of the two files may start a page.
const (
	entryBytes  = 64
	commitBytes = 2*4096 + 2*entryBytes
)

func entryCost(key, value []byte) int64 { return int64(2*(len(key)+entryBytes) + len(value)) }

func (b *Badger) Close() error { return b.db.Close() }

// Compact rewrites value-log files that are mostly garbage (Badger keeps large values,
// such as big manifests, there, and never reclaims them by itself). It frees space,
// so it may go under the reserve; a rewrite writes the live part of one file, at most
// half of it, and it is held for a whole file (one may run past its size by a write).
func (b *Badger) Compact() error {
	for range 64 {
		give, err := b.room(b.vlogFile, b.Floor())
		if err != nil {
			return err
		}
		err = b.db.RunValueLogGC(0.5)
		give()
		if err != nil {
			if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
				return nil
			}
			return full(err)
		}
	}
	return nil
}

// Sync and Flatten push everything to the disk's tables (tests).
func (b *Badger) Sync() error               { return b.db.Sync() }
func (b *Badger) Flatten(workers int) error { return b.db.Flatten(workers) }

// badgerTxn counts what a read-write transaction writes, for the account.
type badgerTxn struct {
	txn           *badger.Txn
	writes, bytes int64
}

func (t *badgerTxn) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t *badgerTxn) Set(key, value []byte) error {
	t.writes, t.bytes = t.writes+1, t.bytes+entryCost(key, value)
	return tooBig(t.txn.Set(key, value))
}

func (t *badgerTxn) Delete(key []byte) error {
	t.writes, t.bytes = t.writes+1, t.bytes+entryCost(key, nil)
	return tooBig(t.txn.Delete(key))
}

// Scan reads through an iterator: the keys it visits join the transaction's read set;
// keys another transaction inserts into the range do not (Badger has no range locks),
// so callers make a writer that must be seen also write a key the scanner reads with
// Get.
func (t *badgerTxn) Scan(prefix, start []byte, keysOnly bool, fn func(key, value []byte) error) error {
	it := t.txn.NewIterator(badger.IteratorOptions{PrefetchValues: !keysOnly, Prefix: prefix})
	defer it.Close()
	if start == nil {
		it.Rewind()
	} else {
		it.Seek(start)
	}
	for ; it.Valid(); it.Next() {
		item := it.Item()
		var err error
		if keysOnly {
			err = fn(item.Key(), nil)
		} else {
			err = item.Value(func(v []byte) error { return fn(item.Key(), v) })
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func tooBig(err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
	}
	return err
}

// badgerLogger sends Badger's chatter to slog, keeping only warnings and errors.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Infof(string, ...any)  {}
func (l badgerLogger) Debugf(string, ...any) {}
