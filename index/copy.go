package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// CopyReport says what Copy did.
type CopyReport struct {
	Keys    int // keys in the source
	Written int // keys written (new or changed) in the destination
	// Sum is the digest of every key and value, in key order, on both sides after the
	// copy (they are equal, or Copy fails).
	Sum string
}

// copyBatch is how many keys Copy moves per destination transaction.
const copyBatch = 500

// Copy copies every key of src into dst, a batch at a time, writing only what dst
// does not hold already (a second run writes nothing), then verifies that both hold
// the same keys and values. A destination holding keys the source does not is
// refused before anything is written: it is another registry's index. Nothing may
// write to either meanwhile (stop the source's dockyard; start the destination's
// after).
func Copy(ctx context.Context, dst, src DB, progress func(copied int)) (CopyReport, error) {
	var rep CopyReport
	if extra, err := firstMissing(dst, src); err != nil {
		return rep, err
	} else if extra != nil {
		return rep, fmt.Errorf("index copy: the destination holds key %q, which the source does not: it is not empty, nor an earlier copy of this index", extra)
	}
	var start []byte
	for {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		type kv struct{ k, v []byte }
		var page []kv
		err := src.View(func(txn Txn) error {
			page = page[:0]
			return txn.Scan(nil, start, false, func(k, v []byte) error {
				if start != nil && bytes.Equal(k, start) {
					return nil
				}
				page = append(page, kv{bytes.Clone(k), bytes.Clone(v)})
				if len(page) == copyBatch {
					return errPageFull
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errPageFull) {
			return rep, fmt.Errorf("index copy: reading the source: %w", err)
		}
		if len(page) == 0 {
			break
		}
		written := 0
		err = dst.Update(func(txn Txn) error {
			written = 0
			for _, p := range page {
				old, err := txn.Get(p.k)
				if err == nil && bytes.Equal(old, p.v) {
					continue
				}
				if err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
				if err := txn.Set(p.k, p.v); err != nil {
					return err
				}
				written++
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("index copy: writing the destination: %w", err)
		}
		rep.Keys += len(page)
		rep.Written += written
		if progress != nil {
			progress(rep.Keys)
		}
		start = page[len(page)-1].k
	}
	srcSum, srcN, err := Sum(src)
	if err != nil {
		return rep, err
	}
	dstSum, dstN, err := Sum(dst)
	if err != nil {
		return rep, err
	}
	if srcSum != dstSum || srcN != dstN {
		return rep, fmt.Errorf("index copy: verification failed: the source holds %d keys (%s), the destination %d (%s)", srcN, srcSum, dstN, dstSum)
	}
	rep.Sum = srcSum
	return rep, nil
}

var errPageFull = errors.New("page full")

// Sum digests every key and value of db in key order, and counts the keys.
func Sum(db DB) (string, int, error) {
	h := sha256.New()
	n := 0
	err := db.View(func(txn Txn) error {
		h.Reset()
		n = 0
		return txn.Scan(nil, nil, false, func(k, v []byte) error {
			n++
			writeLenPrefixed(h, k)
			writeLenPrefixed(h, v)
			return nil
		})
	})
	return fmt.Sprintf("sha256:%x", h.Sum(nil)), n, err
}

func writeLenPrefixed(h hash.Hash, b []byte) {
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(len(b)))
	h.Write(l[:])
	h.Write(b)
}

// firstMissing returns the first key of dst that src does not hold (nil: none).
func firstMissing(dst, src DB) ([]byte, error) {
	var missing []byte
	err := dst.View(func(dtx Txn) error {
		return src.View(func(stx Txn) error {
			return dtx.Scan(nil, nil, true, func(k, _ []byte) error {
				if _, err := stx.Get(k); errors.Is(err, ErrNotFound) {
					missing = bytes.Clone(k)
					return errPageFull
				} else if err != nil {
					return err
				}
				return nil
			})
		})
	})
	if errors.Is(err, errPageFull) {
		err = nil
	}
	return missing, err
}
