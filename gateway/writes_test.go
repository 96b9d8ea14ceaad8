package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/gateway"
)

// dialSmallWindow opens a connection whose receive buffer is 4 KiB: a client that
// does not read fills it, and the server's writes block soon.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin sends req on c again and again, never reading, until a write fails
// (the server closed the connection: it resets it, unread requests in its buffer)
// or the time is up; it says how long that took.
func closedWithin(t *testing.T, c net.Conn, req string, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	c.SetWriteDeadline(start.Add(limit))
	for {
		if _, err := io.WriteString(c, req); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return time.Since(start), false
			}
			return time.Since(start), true
		}
	}
}

// A response its client does not read holds its connection at most the write
// timeout: each write to the client must make progress within it (the default is the
// read timeout). Pipelined requests whose answers are never read, and a blob never
// read, are cut there.
func TestAResponseNobodyReadsIsCutAtTheWriteTimeout(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.HeaderTimeout, o.ReadTimeout = time.Second, time.Second
	}})
	pipelined := strings.Repeat(getBase, 2000)
	if took, closed := closedWithin(t, dialSmallWindow(t, r.addr), pipelined, 15*time.Second); !closed || took > 5*time.Second {
		t.Errorf("pipelined requests never read: closed %v after %s", closed, took)
	}
	blob := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	d := r.pushBlob("a", blob)
	c := dialSmallWindow(t, r.addr)
	if took, closed := closedWithin(t, c, "GET /v2/a/blobs/"+d+" HTTP/1.1\r\nHost: x\r\n\r\n", 15*time.Second); !closed || took > 5*time.Second {
		t.Errorf("blobs never read: closed %v after %s", closed, took)
	}
}

// The write timeout bounds a pause, not a response: a client reading a large blob
// slowly but steadily, for longer than the timeout in all, gets all of it.
func TestASlowSteadyDownloadIsNotCut(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{gateway: func(o *gateway.Options) {
		o.ReadTimeout, o.WriteTimeout = time.Second, time.Second
	}})
	blob := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	d := r.pushBlob("a", blob)
	c := dialSmallWindow(t, r.addr)
	io.WriteString(c, "GET /v2/a/blobs/"+d+" HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	h := sha256.New()
	buf := make([]byte, 32<<10)
	const rate = 4 << 20 // bytes a second: 4 s in all
	for total := 0; ; {
		n, err := resp.Body.Read(buf)
		h.Write(buf[:n])
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %s: %v", time.Since(start), err)
		}
		time.Sleep(time.Until(start.Add(time.Duration(total) * time.Second / rate)))
	}
	if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != d {
		t.Errorf("the blob read slowly is %s, not %s", got, d)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("the download took only %s: not longer than the write timeout", took)
	}
}
