// Package index keeps dockyard's index — repositories, tags, manifests, links,
// referrers, reference counts, upload sessions, pull records — as ordered keys and
// values in serialisable transactions, and the locks the instances sharing it take.
// Badger is the embedded driver; PostgreSQL the one several instances share (with
// advisory locks and a presence lock). What the keys mean, and every rule that keeps
// them consistent (reference counting, pending references, conditional deletes, GC,
// fsck), is package cache's: written once above this seam, whatever the driver.
//
// A driver gives each transaction a consistent snapshot and commits it only if
// nothing it read (by Get or by Scan) was changed meanwhile by a transaction that
// committed first; Update retries such conflicts itself, running fn again (up to
// Attempts times, then ErrContended).
package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// DB is an index.
type DB interface {
	// View runs fn in a read-only transaction.
	View(fn func(Txn) error) error
	// Update runs fn in a read-write transaction and commits it, running fn again
	// when the commit conflicts with a concurrent one.
	Update(fn func(Txn) error) error
	// Close flushes and closes the index.
	Close() error
}

// Txn reads and writes keys in one transaction.
type Txn interface {
	// Get returns a copy of the value at key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Set writes value at key. ErrTxnTooBig: the transaction cannot take more.
	Set(key, value []byte) error
	// Delete removes key (a missing key is not an error). ErrTxnTooBig as Set.
	Delete(key []byte) error
	// Scan calls fn for every key that starts with prefix and is not before start
	// (nil: from the first), in key order, until fn returns an error (which Scan
	// returns). key and value are valid only during the call; with keysOnly, value is
	// nil.
	Scan(prefix, start []byte, keysOnly bool, fn func(key, value []byte) error) error
}

// Getter is implemented by drivers that read one key faster on its own than in a
// transaction (PostgreSQL: one statement, a snapshot of its own, instead of BEGIN,
// SELECT and COMMIT).
type Getter interface {
	GetOne(key []byte) ([]byte, error)
}

// GetOne reads one key of db (ErrNotFound when it has none), alone.
func GetOne(db DB, key []byte) (v []byte, err error) {
	if g, ok := db.(Getter); ok {
		return g.GetOne(key)
	}
	err = db.View(func(txn Txn) error {
		v, err = txn.Get(key)
		return err
	})
	return v, err
}

// ManyGetter is implemented by transactions that read several keys faster at once
// than one by one (PostgreSQL: one statement instead of one per key).
type ManyGetter interface {
	GetMany(keys [][]byte) ([][]byte, error)
}

// GetMany reads keys in txn; a key without a value has nil (a present empty value is
// empty, not nil).
func GetMany(txn Txn, keys [][]byte) ([][]byte, error) {
	if g, ok := txn.(ManyGetter); ok {
		return g.GetMany(keys)
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		v, err := txn.Get(k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if v == nil {
			v = []byte{}
		}
		out[i] = v
	}
	return out, nil
}

// Sharer is implemented by drivers whose index other processes share (PostgreSQL):
// what a process caches of it in memory may be changed by another at any time.
type Sharer interface {
	Shared() bool
}

// OnDisk is implemented by drivers that keep the index in a local directory (Badger):
// they need free space on its filesystem to write, and refuse writes
// (oci.ErrStorageFull) that would take it under their reserve. Space is their account
// of that filesystem (nil: not measured), which other writers on it share.
type OnDisk interface {
	Dir() string
	Reserve() int64
	Space() *Space
}

// Freer is implemented by drivers that keep a reserve of free space (Badger): a write
// that frees space (a delete, a collection, a cancelled upload) may go under the
// reserve, down to a floor of its own, so that an index that filled its disk can
// always be emptied through the registry.
type Freer interface {
	UpdateFreeing(fn func(Txn) error) error
}

// UpdateFreeing runs fn as db.Update does, as a write that frees space where db tells
// those apart.
func UpdateFreeing(db DB, fn func(Txn) error) error {
	if f, ok := db.(Freer); ok {
		return f.UpdateFreeing(fn)
	}
	return db.Update(fn)
}

// Trier is implemented by drivers that can bound how often a read-write transaction
// runs again after conflicts.
type Trier interface {
	// TryUpdate is Update (UpdateFreeing when freeing) giving up after attempts runs
	// that conflicted, with an error wrapping ErrContended.
	TryUpdate(fn func(Txn) error, freeing bool, attempts int) error
}

// TryUpdate runs fn as db.Update (or UpdateFreeing) does, giving up with ErrContended
// after attempts conflicting runs where db can bound them. Work that can be split
// (a collection's batch) tries a few times, then splits: a big transaction reading
// keys concurrent writers change can conflict on every attempt.
func TryUpdate(db DB, fn func(Txn) error, freeing bool, attempts int) error {
	if t, ok := db.(Trier); ok {
		return t.TryUpdate(fn, freeing, attempts)
	}
	if freeing {
		return UpdateFreeing(db, fn)
	}
	return db.Update(fn)
}

// Attempts is how often Update runs a transaction that keeps conflicting before it
// gives up with ErrContended.
const Attempts = 1000

// retry runs once until it succeeds, fails otherwise than by a conflict, or has
// conflicted attempts times; between conflicting runs it waits a random while that
// grows (up to 4 ms), so that transactions conflicting with each other spread out
// (the caller may hold locks meanwhile: the pauses stay short).
func retry(attempts int, once func() error, conflict func(error) bool) error {
	for attempt := 1; ; attempt++ {
		err := once()
		if err == nil || !conflict(err) {
			return err
		}
		if attempt >= attempts {
			busy := oci.ErrIndexUnavailable.Withf("the index is busy: a write conflicted with concurrent ones %d times; try again", attempt)
			return fmt.Errorf("%w: %w: %w", busy, ErrContended, err)
		}
		if attempt > 1 {
			time.Sleep(rand.N(time.Millisecond << min(attempt-1, 2)))
		}
	}
}

// Compacter is implemented by drivers that reclaim space on request (Badger's value
// log).
type Compacter interface {
	Compact() error
}

var (
	// ErrNotFound: no value at the key.
	ErrNotFound = errors.New("index: key not found")
	// ErrTxnTooBig: the transaction holds more changes than the driver takes at once;
	// split the work.
	ErrTxnTooBig = errors.New("index: transaction too big")
	// ErrContended: the transaction conflicted with concurrent ones on every attempt;
	// split the work, or try again later.
	ErrContended = errors.New("index: transaction kept conflicting with concurrent ones")
)
