package index

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dustin/go-humanize"

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
}

// Badger is the embedded index: Badger in a directory, every commit synced (a 201
// means the push is durable).
//
// Badger writes its log and its tables through memory maps of files it makes at
// their full size without allocating them, and a write into such a map that the
// filesystem has no room for kills the process (SIGBUS) instead of failing. So the
// index keeps a reserve of free space on its filesystem: under it, writes are
// refused (oci.ErrStorageFull) before they reach Badger, while reads go on, and they
// are taken again as soon as there is room; nothing needs reopening, since Badger
// never met the full disk.
type Badger struct {
	db      *badger.DB
	log     *slog.Logger
	dir     string
	reserve int64
	free    func() (int64, error) // nil: not measured
}

// OpenBadger opens (creating if needed) the index in o.Dir.
func OpenBadger(o BadgerOptions) (*Badger, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 16 << 20
	}
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
		WithValueLogFileSize(max(1<<20, 4*o.MemTableSize)).
		WithValueThreshold(min(64<<10, o.MemTableSize/32)).
		WithNumCompactors(2)
	if o.FreeSpace == nil {
		o.FreeSpace = DiskFree(o.Dir)
	}
	b := &Badger{log: o.Logger, dir: o.Dir, reserve: badgerReserve(o.MemTableSize), free: o.FreeSpace}
	if _, err := os.Stat(o.Dir); err == nil {
		// Opening writes too (a log, and the tables of one a crash left): on a full
		// filesystem Badger would die of it.
		if err := b.room(); err != nil {
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

// badgerReserve is the free space Badger may take after a write it was let make:
// four memtables' worth — the rest of the write-ahead log and the next one (a
// transaction is at most 15% of a memtable, and a few run at once), the table a full
// memtable is flushed to, and the compaction that flush starts.
func badgerReserve(memTable int64) int64 { return 4 * memTable }

// Dir is the directory the index writes to.
func (b *Badger) Dir() string { return b.dir }

// Reserve is the free space the index keeps on its filesystem.
func (b *Badger) Reserve() int64 { return b.reserve }

// room refuses a write when the index's filesystem is under the reserve. Where free
// space cannot be measured, the write goes ahead.
func (b *Badger) room() error {
	if b.free == nil {
		return nil
	}
	free, err := b.free()
	if err != nil {
		b.log.Warn("free space of the index's filesystem", "dir", b.dir, "err", err)
		return nil
	}
	if free < b.reserve {
		return fmt.Errorf("%w (index in %s)", oci.ErrStorageFull.Withf("the registry's index storage is full: %s free, under the %s the index keeps to write safely; free some space",
			humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(b.reserve))), b.dir)
	}
	return nil
}

// full marks a failure for want of space as ErrStorageFull.
func full(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", oci.ErrStorageFull.Withf("the registry's index storage is full; free some space"), err)
	}
	return err
}

func (b *Badger) View(fn func(Txn) error) error {
	return b.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
}

// Update retries conflicts (Badger's optimistic concurrency: a key fn read was
// changed by a transaction that committed first). Under the reserve it refuses.
func (b *Badger) Update(fn func(Txn) error) error {
	if err := b.room(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := b.db.Update(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
		if errors.Is(err, badger.ErrConflict) && attempt < 1000 {
			continue
		}
		return full(tooBig(err))
	}
}

func (b *Badger) Close() error { return b.db.Close() }

// Compact rewrites value-log files that are mostly garbage (Badger keeps large values,
// such as big manifests, there, and never reclaims them by itself).
func (b *Badger) Compact() error {
	for range 64 {
		if err := b.room(); err != nil {
			return err
		}
		if err := b.db.RunValueLogGC(0.5); err != nil {
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

type badgerTxn struct{ txn *badger.Txn }

func (t badgerTxn) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t badgerTxn) Set(key, value []byte) error { return tooBig(t.txn.Set(key, value)) }
func (t badgerTxn) Delete(key []byte) error     { return tooBig(t.txn.Delete(key)) }

// Scan reads through an iterator: the keys it visits join the transaction's read set;
// keys another transaction inserts into the range do not (Badger has no range locks),
// so callers make a writer that must be seen also write a key the scanner reads with
// Get.
func (t badgerTxn) Scan(prefix, start []byte, keysOnly bool, fn func(key, value []byte) error) error {
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
