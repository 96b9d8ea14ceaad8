package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// The index records the version of its layout. Open upgrades an older index in place,
// in bounded transactions that can be run again after a crash (each step looks at what
// is there, not at what it expects), and writes the new version last; it refuses an
// index newer than it knows.
//
// Versions:
//  1. (no version key) dockyard up to the first lifecycle release: one kind of pending
//     reference for blobs and child manifests alike.
//  2. pending references of layers (P) and child manifests (Q) apart, each digest with
//     a mark (N) that new pending references write.
const formatVersion = 2

var formatKey = key(kindMeta, "format")

// indexIDKey holds the index's identity, made at its creation: a blob store other
// processes reach is claimed for it (blobstore.Claimer).
var indexIDKey = key(kindMeta, "id")

// indexID returns the index's identity, making it the first time.
func (s *Store) indexID() (string, error) {
	var id string
	err := s.update(func(txn index.Txn) error {
		v, ok, err := getValue(txn, indexIDKey)
		if err != nil || ok {
			id = string(v)
			return err
		}
		id = newID()
		return txn.Set(indexIDKey, []byte(id))
	})
	return id, err
}

// migrations[v] upgrades an index of version v to v+1.
var migrations = map[int]func(s *Store) error{
	1: (*Store).splitPendingReferences,
}

// upgrade brings the index to formatVersion.
func (s *Store) upgrade() error {
	v, err := s.formatVersion()
	if err != nil {
		return err
	}
	if v > formatVersion {
		return fmt.Errorf("the index was written by a newer dockyard (format %d; this one knows up to %d): upgrade dockyard", v, formatVersion)
	}
	for ; v < formatVersion; v++ {
		s.log.Info("upgrading the index", "from", v, "to", v+1)
		if err := migrations[v](s); err != nil {
			return fmt.Errorf("upgrade the index from format %d: %w", v, err)
		}
		next := v + 1
		if err := s.update(func(txn index.Txn) error { return txn.Set(formatKey, []byte(strconv.Itoa(next))) }); err != nil {
			return err
		}
	}
	return nil
}

// formatVersion reads the stored version: an index without one is version 1 when it
// holds anything, and a new index (the current version) when it is empty.
func (s *Store) formatVersion() (int, error) {
	var v int
	err := s.db.View(func(txn index.Txn) error {
		b, ok, err := getValue(txn, formatKey)
		if err != nil {
			return err
		}
		if ok {
			v, err = strconv.Atoi(string(b))
			if err != nil {
				return fmt.Errorf("index format %q: %w", b, err)
			}
			return nil
		}
		v = formatVersion
		err = txn.Scan(nil, nil, true, func(_, _ []byte) error {
			v = 1 // not empty
			return errStop
		})
		if errors.Is(err, errStop) {
			err = nil
		}
		return err
	})
	if err == nil && v == formatVersion {
		// Record it, so that an index emptied later is not taken for a new one.
		err = s.update(func(txn index.Txn) error {
			if ok, err := exists(txn, formatKey); ok || err != nil {
				return err
			}
			return txn.Set(formatKey, []byte(strconv.Itoa(v)))
		})
	}
	return v, err
}

// migrationBatch bounds the changes of one migration transaction.
const migrationBatch = 1000

// splitPendingReferences (1 → 2) moves the pending references that an index makes to
// a child manifest from P to Q (keeping P too when the same manifest also lists the
// digest as a layer), then writes every digest's pending mark.
func (s *Store) splitPendingReferences() error {
	type ref struct{ d, from oci.Digest }
	var refs []ref
	err := s.db.View(func(txn index.Txn) error {
		return scanKeys(txn, []byte{kindPendingBlob}, func(rest []byte) error {
			d, from, ok := strings.Cut(string(rest), "\x00")
			if ok {
				refs = append(refs, ref{oci.Digest(d), oci.Digest(from)})
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for i := 0; i < len(refs); i += migrationBatch {
		batch := refs[i:min(i+migrationBatch, len(refs))]
		err := s.update(func(txn index.Txn) error {
			for _, r := range batch {
				v, ok, err := getValue(txn, contentKey(r.from))
				if err != nil {
					return err
				}
				if !ok {
					continue // the referring manifest is gone: fsck reports the stray key
				}
				h, _, err := decodeContent(v)
				if err != nil {
					return err
				}
				asBlob, asChild := slices.Contains(h.Blobs, r.d), slices.Contains(h.Children, r.d)
				if !asChild {
					continue
				}
				if err := txn.Set(pendingKey(kindContentRefs, r.d, r.from), nil); err != nil {
					return err
				}
				if !asBlob {
					if err := txn.Delete(pendingKey(kindBlob, r.d, r.from)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return s.rewritePendingMarks()
}

// rewritePendingMarks sets every digest's pending mark to its number of pending
// references.
func (s *Store) rewritePendingMarks() error {
	counts := map[string]int64{} // mark key → count
	err := s.db.View(func(txn index.Txn) error {
		for _, kind := range []byte{kindBlob, kindContentRefs} {
			err := scanKeys(txn, []byte{pendingKind(kind)}, func(rest []byte) error {
				d, _, _ := strings.Cut(string(rest), "\x00")
				counts[string(pendingMarkKey(kind, oci.Digest(d)))]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	for i := 0; i < len(keys); i += migrationBatch {
		batch := keys[i:min(i+migrationBatch, len(keys))]
		if err := s.update(func(txn index.Txn) error {
			for _, k := range batch {
				if err := txn.Set([]byte(k), binary.AppendVarint(nil, counts[k])); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
