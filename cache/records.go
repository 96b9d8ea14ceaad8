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
	kindJobs        = 'J' // J job → when the scheduled job last finished
	kindSecrets     = 'S' // S name → a secret the instances share (the token signing key)
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

// SecretRecords is the table of secrets every instance on the index shares.
func (s *Store) SecretRecords() RecordTable { return RecordTable{s, kindSecrets} }

// JobRecords is the table of scheduled jobs' last runs.
func (s *Store) JobRecords() RecordTable { return RecordTable{s, kindJobs} }

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

// GetOrPut returns record id, storing v there first when there is none: of instances
// racing to create one record, all end up with the same.
func (t RecordTable) GetOrPut(id string, v []byte) (stored []byte, err error) {
	err = t.s.update(func(txn index.Txn) error {
		old, ok, err := getValue(txn, key(t.kind, id))
		if err != nil || ok {
			stored = old
			return err
		}
		stored = v
		return txn.Set(key(t.kind, id), v)
	})
	return stored, err
}

// List calls fn with every record of the table, in id order.
func (t RecordTable) List(fn func(id string, v []byte) error) error {
	return t.s.db.View(func(txn index.Txn) error {
		return scan(txn, []byte{t.kind}, func(id, v []byte) error { return fn(string(id), bytes.Clone(v)) })
	})
}
