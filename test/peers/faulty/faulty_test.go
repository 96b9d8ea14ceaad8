package faulty_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/test/peers/faulty"
)

// content is what the backend serves at every path, with range support.
var content = func() []byte {
	b := make([]byte, 256<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

func start(t *testing.T) *faulty.Proxy {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(backend.Close)
	p, err := faulty.Start(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

type result struct {
	status int
	header http.Header
	body   []byte
	err    error // from the request or the body
}

func fetch(t *testing.T, url string, header ...string) result {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// A fresh connection each time: a reset one must not be reused.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestCutsEndTheBodyShortAtTheirOffset(t *testing.T) {
	p := start(t)
	p.Add(faulty.Rule{Path: "/close", Times: 1, Fault: faulty.Fault{Cut: faulty.Close, CutAt: 1000}},
		faulty.Rule{Path: "/reset", Times: 1, Fault: faulty.Fault{Cut: faulty.Reset, CutAt: 1000}})

	r := fetch(t, p.URL+"/close")
	if r.status != 200 || r.err == nil || !bytes.Equal(r.body, content[:1000]) {
		t.Errorf("closed at 1000: status %d, %d bytes, err %v; want the first 1000 bytes and an error", r.status, len(r.body), r.err)
	}
	r = fetch(t, p.URL+"/reset")
	if r.err == nil || len(r.body) > 1000 || !bytes.Equal(r.body, content[:len(r.body)]) {
		t.Errorf("reset at 1000: %d bytes, err %v; want at most the first 1000 and an error", len(r.body), r.err)
	}
	// Each rule applied once: the next requests pass whole.
	for _, path := range []string{"/close", "/reset"} {
		if r := fetch(t, p.URL+path); r.err != nil || !bytes.Equal(r.body, content) {
			t.Errorf("%s after its rule was used up: %d bytes, %v", path, len(r.body), r.err)
		}
	}
	log := p.Log()
	if len(log) != 4 || log[0].Fault != "close@1000" || log[1].Fault != "reset@1000" || log[2].Fault != "" {
		t.Errorf("log: %+v", log)
	}
}

func TestDropResetsWithoutAnAnswer(t *testing.T) {
	p := start(t)
	p.Add(faulty.Rule{Times: 1, Fault: faulty.Fault{Drop: true}})
	if r := fetch(t, p.URL+"/x"); r.err == nil || r.status != 0 {
		t.Errorf("dropped: %d, %v; want no answer", r.status, r.err)
	}
	if r := fetch(t, p.URL+"/x"); r.err != nil || !bytes.Equal(r.body, content) {
		t.Errorf("after the drop: %d bytes, %v", len(r.body), r.err)
	}
	if log := p.Log(); log[0].Fault != "drop" {
		t.Errorf("log: %+v", log)
	}
}

func TestFlipChangesOneBit(t *testing.T) {
	p := start(t)
	p.Add(faulty.Rule{Times: 1, Fault: faulty.Fault{Flip: true, FlipAt: 70000}})
	r := fetch(t, p.URL+"/x")
	if r.err != nil || len(r.body) != len(content) {
		t.Fatalf("%d bytes, %v", len(r.body), r.err)
	}
	var diff []int
	for i := range content {
		if r.body[i] != content[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) != 1 || diff[0] != 70000 || r.body[70000]^content[70000] != 1 {
		t.Errorf("bytes differing: %v", diff)
	}
}

func TestStatusStormThenThrough(t *testing.T) {
	p := start(t)
	p.Add(faulty.Rule{Method: "GET", Times: 2, Fault: faulty.Fault{Status: 429, RetryAfter: "3"}})
	for i, want := range []int{429, 429, 200} {
		r := fetch(t, p.URL+"/x")
		if r.status != want {
			t.Errorf("request %d: %d, want %d", i, r.status, want)
		}
		if want == 429 && (r.header.Get("Retry-After") != "3" || !strings.Contains(string(r.body), "TOOMANYREQUESTS")) {
			t.Errorf("request %d: Retry-After %q, body %s", i, r.header.Get("Retry-After"), r.body)
		}
	}
}

func TestIgnoreRangeAnswersTheWholeBody(t *testing.T) {
	p := start(t)
	if r := fetch(t, p.URL+"/x", "Range", "bytes=100-"); r.status != 206 || !bytes.Equal(r.body, content[100:]) {
		t.Errorf("a range passed through: %d, %d bytes", r.status, len(r.body))
	}
	p.Add(faulty.Rule{Fault: faulty.Fault{IgnoreRange: true}})
	if r := fetch(t, p.URL+"/x", "Range", "bytes=100-"); r.status != 200 || !bytes.Equal(r.body, content) {
		t.Errorf("a range hidden from the backend: %d, %d bytes", r.status, len(r.body))
	}
	log := p.Log()
	if len(log) != 2 || log[1].Range != "bytes=100-" || log[1].Fault != "ignore-range" {
		t.Errorf("log: %+v", log)
	}
}

func TestThrottledBodiesArriveWhole(t *testing.T) {
	p := start(t)
	p.Add(faulty.Rule{Fault: faulty.Fault{BytesPerSecond: 1 << 20}})
	if r := fetch(t, p.URL+"/x"); r.err != nil || !bytes.Equal(r.body, content) {
		t.Errorf("throttled: %d bytes, %v", len(r.body), r.err)
	}
	if log := p.Log(); log[0].Fault != "throttle" {
		t.Errorf("log: %+v", log)
	}
}

func TestGoingDownResetsHeldBodiesAndNewRequests(t *testing.T) {
	p := start(t)
	hold := make(chan struct{})
	defer close(hold)
	p.Add(faulty.Rule{Times: 1, Fault: faulty.Fault{Hold: hold, HoldAt: 5000}})
	done := make(chan result)
	go func() { done <- fetch(t, p.URL+"/held") }()
	for p.Count(func(s faulty.Seen) bool { return strings.HasPrefix(s.Fault, "hold@") }) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	p.SetDown(true)
	if r := <-done; r.err == nil || timedOut(r.err) || len(r.body) > 5000 {
		t.Errorf("held body when the proxy went down: %d bytes, %v; want it cut", len(r.body), r.err)
	}
	if r := fetch(t, p.URL+"/x"); r.err == nil {
		t.Errorf("a request while down: %d", r.status)
	}
	p.SetDown(false)
	if r := fetch(t, p.URL+"/x"); r.err != nil || !bytes.Equal(r.body, content) {
		t.Errorf("back up: %d bytes, %v", len(r.body), r.err)
	}
}

func TestRulesAndLogOverHTTP(t *testing.T) {
	p := start(t)
	resp, err := http.Post(p.URL+"/-/faulty/rules", "application/json",
		strings.NewReader(`[{"path":"/slow","latency":"1ms","times":1},{"path":"/cut","cut":"close","cut_at":10}]`))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("POST rules: %v %v", resp, err)
	}
	if r := fetch(t, p.URL+"/-/faulty/rules"); !strings.Contains(string(r.body), `"cut_at":10`) || !strings.Contains(string(r.body), `"latency":1000000`) {
		t.Errorf("rules: %s", r.body)
	}
	fetch(t, p.URL+"/slow")
	if r := fetch(t, p.URL+"/cut"); len(r.body) != 10 || r.err == nil {
		t.Errorf("/cut: %d bytes, %v", len(r.body), r.err)
	}
	r := fetch(t, p.URL+"/-/faulty/log")
	if !strings.Contains(string(r.body), `"fault":"latency"`) || !strings.Contains(string(r.body), `"fault":"close@10"`) {
		t.Errorf("log: %s", r.body)
	}
	req, _ := http.NewRequest("DELETE", p.URL+"/-/faulty/rules", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("DELETE rules: %v %v", resp, err)
	}
	if r := fetch(t, p.URL+"/cut"); r.err != nil || len(r.body) != len(content) {
		t.Errorf("/cut after the rules were removed: %d bytes, %v", len(r.body), r.err)
	}
}
