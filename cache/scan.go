package cache

import "github.com/dockyard/dockyard/index"

// scan calls fn with every key below prefix p (without the prefix) and its value, in
// key order, until fn returns an error. Both slices are only valid during the call.
// Keys read this way join the transaction's read set; keys inserted into the range by
// another transaction may not (Badger has no range locks), so a writer that must be
// seen by a scanning transaction also writes a key that transaction reads with Get.
func scan(txn index.Txn, p []byte, fn func(rest, v []byte) error) error {
	return txn.Scan(p, nil, false, func(k, v []byte) error { return fn(k[len(p):], v) })
}

// scanKeys is scan without the values.
func scanKeys(txn index.Txn, p []byte, fn func(rest []byte) error) error {
	return txn.Scan(p, nil, true, func(k, _ []byte) error { return fn(k[len(p):]) })
}

// keysWithPrefix lists (copies of) the whole keys below p.
func keysWithPrefix(txn index.Txn, p []byte) ([][]byte, error) {
	var out [][]byte
	err := scanKeys(txn, p, func(rest []byte) error {
		out = append(out, append(append([]byte(nil), p...), rest...))
		return nil
	})
	return out, err
}
