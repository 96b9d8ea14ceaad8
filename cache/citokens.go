package cache

import (
	"encoding/json"

	"github.com/dgraph-io/badger/v4"

	"github.com/dockyard/dockyard/auth"
)

const kindCIToken = 'k' // k id → auth.CIToken (hashed secret)

// PutCIToken stores or replaces a CI token record.
func (s *Store) PutCIToken(t auth.CIToken) error {
	return s.update(func(txn *badger.Txn) error { return setJSON(txn, key(kindCIToken, t.ID), t) })
}

// GetCIToken returns the record of token id, or nil when there is none.
func (s *Store) GetCIToken(id string) (*auth.CIToken, error) {
	var t auth.CIToken
	var found bool
	err := s.db.View(func(txn *badger.Txn) (err error) {
		found, err = getJSON(txn, key(kindCIToken, id), &t)
		return err
	})
	if !found || err != nil {
		return nil, err
	}
	return &t, nil
}

// ListCITokens returns every token record.
func (s *Store) ListCITokens() ([]auth.CIToken, error) {
	var out []auth.CIToken
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{kindCIToken}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var t auth.CIToken
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &t) }); err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

var _ auth.TokenStore = (*Store)(nil)
