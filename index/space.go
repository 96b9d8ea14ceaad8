package index

import (
	"fmt"
	"math"
	"strconv"
	"sync"
)

// Space keeps the account of one filesystem's free space for the writers that share
// it. A writer reserves the bytes it is about to write and gives them back once they
// are written (the filesystem counts them then); it is refused when the free space,
// less what other writers have reserved and not yet written, less its own bytes, would
// fall under the floor it must leave. So writes admitted at once cannot together take
// the filesystem under a floor that each, alone, would have kept: a check of the free
// space alone lets every writer of a burst through.
type Space struct {
	free func() (int64, error)
	mu   sync.Mutex
	held int64 // reserved, not yet written
}

// NewSpace accounts for the filesystem free measures; nil when free is nil (nothing
// measured: every write goes ahead).
func NewSpace(free func() (int64, error)) *Space {
	if free == nil {
		return nil
	}
	return &Space{free: free}
}

// Reserve takes n bytes if the free space, less what is held for others and less n,
// stays at or above floor. Taken, the caller gives them back (Give) once written or
// given up. Refused, short says why. err is a failure to measure (nothing taken).
func (s *Space) Reserve(n, floor int64) (short *Shortage, err error) {
	if s == nil {
		return nil, nil
	}
	// Measured under the lock: a writer that wrote and gave back its bytes between a
	// measure and the check would be counted neither in the one nor in the other.
	s.mu.Lock()
	defer s.mu.Unlock()
	free, err := s.free()
	if err != nil {
		return nil, err
	}
	if free-s.held-n < floor {
		return &Shortage{Free: free, Held: s.held, Write: n, Floor: floor}, nil
	}
	s.held += n
	return nil, nil
}

// Give returns n reserved bytes.
func (s *Space) Give(n int64) {
	if s == nil || n == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held -= n
}

// Held is what writers hold now (for tests).
func (s *Space) Held() int64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// Shortage says why Space refused a write.
type Shortage struct {
	Free  int64 // the filesystem's free space
	Held  int64 // of it, what other writers hold
	Write int64 // the refused write's bytes
	Floor int64 // what must stay free
}

// Describe says it in words that read true, free space rounded down and the rest up
// (with 63.9 MiB free, never "64 MiB free, under 64 MiB"); floor names the floor:
// "63.9 MiB free, under the 64 MiB the index keeps".
func (s *Shortage) Describe(floor string) string {
	left := s.Free - s.Held
	free := SizeDown(left) + " free"
	if s.Held > 0 {
		free = fmt.Sprintf("%s free besides %s held for writes in progress", SizeDown(left), SizeUp(s.Held))
	}
	if left < s.Floor {
		return fmt.Sprintf("%s, under the %s %s", free, SizeUp(s.Floor), floor)
	}
	return fmt.Sprintf("%s, and a write of %s would take it under the %s %s", free, SizeUp(s.Write), SizeUp(s.Floor), floor)
}

// SizeDown and SizeUp print a size in binary units with three significant digits,
// rounded down and up: a size said to be under another is never printed as equal to
// it.
func SizeDown(n int64) string { return size(n, math.Floor) }
func SizeUp(n int64) string   { return size(n, math.Ceil) }

func size(n int64, round func(float64) float64) string {
	if n < 1024 {
		return strconv.FormatInt(max(n, 0), 10) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	scale := 1.0
	switch {
	case v < 10:
		scale = 100
	case v < 100:
		scale = 10
	}
	return strconv.FormatFloat(round(v*scale)/scale, 'f', -1, 64) + " " + units[u]
}
