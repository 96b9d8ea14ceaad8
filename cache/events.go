package cache

import (
	"bytes"
	"errors"

	"github.com/dockyard/dockyard/index"
)

// Event queues are durable FIFO queues of opaque event bodies that another package
// (notify) delivers: one queue per named endpoint, one key per queued event. The
// store keeps them and knows nothing of what the bodies mean or where they go.
//
// An event's id orders its queue: ids are chosen so that byte order is time order
// (notify's are the event time in hex, then random bits), and a queue is read from
// its oldest id. Enqueueing writes without reading, so concurrent requests enqueueing
// into one queue never conflict with each other.
const kindEvent = 'E' // E queue 0 id → event body

// QueuedEvent is one event in a queue.
type QueuedEvent struct {
	ID   string
	Body []byte
}

// EventItem is an event to put into a queue.
type EventItem struct {
	Queue, ID string
	Body      []byte
}

// Enqueue writes items durably, in one transaction when they fit in one (else in
// several: each item is written whole or not at all).
func (s *Store) Enqueue(items []EventItem) error {
	for _, it := range items {
		if it.Queue == "" || it.ID == "" || bytes.IndexByte([]byte(it.Queue), 0) >= 0 || bytes.IndexByte([]byte(it.ID), 0) >= 0 {
			return errors.New("cache: a queued event needs a queue and an id, neither containing NUL")
		}
	}
	return s.enqueue(items)
}

func (s *Store) enqueue(items []EventItem) error {
	if len(items) == 0 {
		return nil
	}
	err := s.update(func(txn index.Txn) error {
		for _, it := range items {
			if err := txn.Set(key(kindEvent, it.Queue, it.ID), it.Body); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, index.ErrTxnTooBig) && len(items) > 1 {
		half := len(items) / 2
		if err := s.enqueue(items[:half]); err != nil {
			return err
		}
		return s.enqueue(items[half:])
	}
	return err
}

// EventQueue is one named queue.
type EventQueue struct {
	s    *Store
	name string
}

// Name is the queue's name.
func (q EventQueue) Name() string { return q.name }

// EventQueue returns the queue called name.
func (s *Store) EventQueue(name string) EventQueue { return EventQueue{s, name} }

// errEnough stops a scan early.
var errEnough = errors.New("enough")

// Oldest returns at most n events from the head of the queue, oldest first.
func (q EventQueue) Oldest(n int) ([]QueuedEvent, error) {
	var out []QueuedEvent
	err := q.s.db.View(func(txn index.Txn) error {
		out = out[:0]
		err := scan(txn, prefix(kindEvent, q.name), func(id, v []byte) error {
			if len(out) >= n {
				return errEnough
			}
			out = append(out, QueuedEvent{ID: string(id), Body: bytes.Clone(v)})
			return nil
		})
		if errors.Is(err, errEnough) {
			err = nil
		}
		return err
	})
	return out, err
}

// Remove deletes events by id (one already gone is no error).
func (q EventQueue) Remove(ids ...string) error {
	return q.s.updateFreeing(func(txn index.Txn) error {
		for _, id := range ids {
			if err := txn.Delete(key(kindEvent, q.name, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Len counts the queued events.
func (q EventQueue) Len() (int, error) {
	n := 0
	err := q.s.db.View(func(txn index.Txn) error {
		n = 0
		return scanKeys(txn, prefix(kindEvent, q.name), func([]byte) error { n++; return nil })
	})
	return n, err
}

// trimBatch bounds the deletes of one transaction of Trim.
const trimBatch = 1000

// Trim drops the oldest events until at most keep remain, and returns the ids dropped
// and how many remain. It walks the queue's keys once (a scan from the head for each
// batch would step over every tombstone left by the batches before).
func (q EventQueue) Trim(keep int) (dropped []string, remain int, err error) {
	n, err := q.Len()
	if err != nil || n <= keep {
		return nil, n, err
	}
	p := prefix(kindEvent, q.name)
	var start []byte
	for over := n - keep; over > 0; {
		var ids []string
		err := q.s.db.View(func(txn index.Txn) error {
			ids = ids[:0]
			err := txn.Scan(p, start, true, func(k, _ []byte) error {
				if len(ids) >= min(over, trimBatch) {
					return errEnough
				}
				ids = append(ids, string(k[len(p):]))
				return nil
			})
			if errors.Is(err, errEnough) {
				err = nil
			}
			return err
		})
		if err != nil || len(ids) == 0 {
			return dropped, n - len(dropped), err
		}
		if err := q.Remove(ids...); err != nil {
			return dropped, n - len(dropped), err
		}
		dropped = append(dropped, ids...)
		over -= len(ids)
		start = append(key(kindEvent, q.name, ids[len(ids)-1]), 0) // after the last one dropped
	}
	return dropped, n - len(dropped), nil
}
