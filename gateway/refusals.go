package gateway

import (
	"log/slog"
	"sync"
	"time"
)

// storageFullLogEvery is how often, at most, a request refused for a full disk is
// logged: a full disk refuses every push and every chunk, thousands a second, and a
// line each would flood the log (on a disk that has no room). The first refusal is
// logged at once; those after it within the interval are counted, and summed up in one
// line at its end.
const storageFullLogEvery = 10 * time.Second

// refusalLog logs requests refused for want of space, at most one line an interval.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	quiet time.Time // until then, refusals are counted instead of logged
	since time.Time // when the last line was written
	held  int       // refusals counted since
	last  error     // the last of them
	timer *time.Timer
}

func (l *refusalLog) refused(method, path string, status int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.held == 0 && !now.Before(l.quiet) {
		l.log.Warn("request failed", "method", method, "path", path, "status", status, "err", err)
		l.quiet, l.since = now.Add(l.every), now
		return
	}
	l.held++
	l.last = err
	if l.timer == nil {
		l.timer = time.AfterFunc(l.quiet.Sub(now), l.flush)
	}
}

// flush writes the line summing up the refusals counted, if any.
func (l *refusalLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.held == 0 {
		return
	}
	now := time.Now()
	l.log.Warn("requests failed: the storage is full", "count", l.held,
		"seconds", int(now.Sub(l.since).Round(time.Second)/time.Second), "last_err", l.last)
	l.held, l.last = 0, nil
	l.quiet, l.since = now.Add(l.every), now
}
