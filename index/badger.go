package index

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// BadgerOptions configure the embedded index.
type BadgerOptions struct {
	Dir    string
	Logger *slog.Logger
	// MemTableSize is the memtable size (default 16 MiB); it also bounds one
	// transaction (15% of it).
	MemTableSize int64
}

// Badger is the embedded index: Badger in a directory, every commit synced (a 201
// means the push is durable).
type Badger struct {
	db  *badger.DB
	log *slog.Logger
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
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return &Badger{db: db, log: o.Logger}, nil
}

func (b *Badger) View(fn func(Txn) error) error {
	return b.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
}

// Update retries conflicts (Badger's optimistic concurrency: a key fn read was
// changed by a transaction that committed first).
func (b *Badger) Update(fn func(Txn) error) error {
	for attempt := 0; ; attempt++ {
		err := b.db.Update(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
		if errors.Is(err, badger.ErrConflict) && attempt < 1000 {
			continue
		}
		return tooBig(err)
	}
}

func (b *Badger) Close() error { return b.db.Close() }

// Compact rewrites value-log files that are mostly garbage (Badger keeps large values,
// such as big manifests, there, and never reclaims them by itself).
func (b *Badger) Compact() error {
	for range 64 {
		if err := b.db.RunValueLogGC(0.5); err != nil {
			if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
				return nil
			}
			return err
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
