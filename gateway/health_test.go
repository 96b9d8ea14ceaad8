package gateway_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/gateway"
)

// countingReadiness counts how often it is asked.
type countingReadiness struct{ asked atomic.Int64 }

func (c *countingReadiness) Ready(context.Context) map[string]error {
	c.asked.Add(1)
	return map[string]error{"index": nil, "storage": nil}
}

// Anyone may probe /-/ready, at any rate: a burst of probes asks the index and the
// storage once, not once per probe.
func TestReadinessProbesDoNotAmplify(t *testing.T) {
	ready := &countingReadiness{}
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) { o.Readiness = ready }})
	start := time.Now()
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := r.do("GET", "/-/ready", nil); resp.StatusCode != 200 {
				t.Errorf("/-/ready: %d %s", resp.StatusCode, resp.body)
			}
		}()
	}
	wg.Wait()
	// One asking per second of the burst (and one more for a second boundary).
	if n, most := ready.asked.Load(), int64(time.Since(start)/time.Second)+2; n > most {
		t.Errorf("200 probes asked the dependencies %d times, want at most %d", n, most)
	}
}
