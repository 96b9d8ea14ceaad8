package cache

import (
	"bytes"
	"errors"

	"github.com/dockyard/dockyard/index"
)

// Records are small opaque values that other packages keep in the index, by table and
// id (CI tokens, token revocations). The store keeps them durable and knows nothing of
// what they mean.

const (
	kindCITokens    = 'k' // k id → a CI token record (JSON of auth.CIToken)
	kindRevocations = 'R' // R user → a revocation record
)

// RecordTable is one table of records.
type RecordTable struct {
	s    *Store
	kind byte
}

// CITokenRecords is the table of CI token records.
func (s *Store) CITokenRecords() RecordTable { return RecordTable{s, kindCITokens} }

// RevocationRecords is the table of per-user token revocations.
func (s *Store) RevocationRecords() RecordTable { return RecordTable{s, kindRevocations} }

// Put stores or replaces record id.
func (t RecordTable) Put(id string, v []byte) error {
	if id == "" {
		return errors.New("cache: a record needs an id")
	}
	return t.s.update(func(txn index.Txn) error { return txn.Set(key(t.kind, id), v) })
}

// Get returns record id; ok is false when there is none.
func (t RecordTable) Get(id string) (v []byte, ok bool, err error) {
	err = t.s.db.View(func(txn index.Txn) error {
		v, ok, err = getValue(txn, key(t.kind, id))
		return err
	})
	return v, ok, err
}

// List calls fn with every record of the table, in id order.
func (t RecordTable) List(fn func(id string, v []byte) error) error {
	return t.s.db.View(func(txn index.Txn) error {
		return scan(txn, []byte{t.kind}, func(id, v []byte) error { return fn(string(id), bytes.Clone(v)) })
	})
}
