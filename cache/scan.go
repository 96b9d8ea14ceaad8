package cache

import "github.com/dgraph-io/badger/v4"

// scan calls fn with every key below prefix p (without the prefix) and its value, in
// key order, until fn returns an error. Both slices are only valid during the call.
// Keys read this way join the transaction's read set; keys inserted into the range by
// another transaction do not (Badger has no range locks), so a writer that must be
// seen by a scanning transaction also writes a key that transaction reads with Get.
func scan(txn *badger.Txn, p []byte, fn func(rest, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: p})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { return fn(item.Key()[len(p):], v) }); err != nil {
			return err
		}
	}
	return nil
}

// scanKeys is scan without the values.
func scanKeys(txn *badger.Txn, p []byte, fn func(rest []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: p})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := fn(it.Item().Key()[len(p):]); err != nil {
			return err
		}
	}
	return nil
}

// keysWithPrefix lists (copies of) the whole keys below p.
func keysWithPrefix(txn *badger.Txn, p []byte) ([][]byte, error) {
	var out [][]byte
	err := scanKeys(txn, p, func(rest []byte) error {
		out = append(out, append(append([]byte(nil), p...), rest...))
		return nil
	})
	return out, err
}
